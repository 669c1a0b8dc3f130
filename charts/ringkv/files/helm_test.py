"""`helm test`: create a KVCluster, put and get a key through its client Service, delete it.

Runs in a pod of the operator image (python3 with ringkv and kubernetes), under
the test's own ServiceAccount. Exit 0 when the value read back is the one put.
"""

from __future__ import annotations

import base64
import os
import sys
import time

from kubernetes import client, config

from ringkv import Client
from ringkv.errors import NoRingError, TransportError

GROUP, VERSION, PLURAL = "ringkv.io", "v1alpha1", "kvclusters"


def main() -> int:
    config.load_incluster_config()
    ns, name = os.environ["NAMESPACE"], os.environ["CLUSTER"]
    timeout = float(os.environ.get("TIMEOUT_S", "300"))
    custom, core = client.CustomObjectsApi(), client.CoreV1Api()
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "KVCluster",
        "metadata": {"name": name},
        "spec": {"replicas": 1, "replicationFactor": 1, "partitions": 16},
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
    try:
        deadline = time.monotonic() + timeout
        phase = ""
        while time.monotonic() < deadline:
            obj = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
            phase = (obj.get("status") or {}).get("phase", "")
            if phase == "Ready":
                break
            time.sleep(2)
        else:
            print(f"KVCluster {name} not Ready after {timeout:.0f} s (phase {phase!r})")
            return 1
        secret = core.read_namespaced_secret(f"{name}-auth", ns)
        token = base64.b64decode(secret.data["token"]).decode()
        url = f"http://{name}.{ns}.svc.cluster.local:8080"
        while True:
            # Ready says the pods are; the Service's endpoints reach kube-proxy
            # a moment later (a first try was refused once), so try again
            try:
                with Client(url, token=token) as kv:
                    kv.put("helm-test", b"hello from helm test")
                    value = kv.get("helm-test")
                break
            except (NoRingError, TransportError) as exc:
                if time.monotonic() >= deadline:
                    print(f"Service {name} did not answer within {timeout:.0f} s: {exc}")
                    return 1
                time.sleep(1)
        if value != b"hello from helm test":
            print(f"read back {value!r}")
            return 1
        print(f"put and got a key through Service {name}")
        return 0
    finally:
        custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)


if __name__ == "__main__":
    sys.exit(main())
