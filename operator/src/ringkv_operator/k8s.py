"""The operator's one seam to the API server: plain dicts in and out, over the official client.

Every call goes through `kubernetes.client.ApiClient.call_api` with the
answer left unparsed, so objects stay the JSON the server sent (no model
classes, no snake_case): the builders' dicts and the server's compare
directly. Only this module and `handlers.py` import `kubernetes`. Blocking:
called from kopf's worker threads, never from its event loop.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from collections.abc import Mapping
from typing import Any

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from ringkv_operator.model import (
    API_VERSION,
    BACKUP_KIND,
    BACKUP_PLURAL,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
)

__all__ = ["ApiException", "Kube", "api_client", "conflict", "missing"]

_PATHS = {
    "StatefulSet": "/apis/apps/v1/namespaces/{ns}/statefulsets",
    "Service": "/api/v1/namespaces/{ns}/services",
    "Secret": "/api/v1/namespaces/{ns}/secrets",
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps",
    "PodDisruptionBudget": "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
    "NetworkPolicy": "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
    "Pod": "/api/v1/namespaces/{ns}/pods",
    "PersistentVolumeClaim": "/api/v1/namespaces/{ns}/persistentvolumeclaims",
    "Event": "/api/v1/namespaces/{ns}/events",
    "Lease": "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
    "Job": "/apis/batch/v1/namespaces/{ns}/jobs",
    KIND: f"/apis/{GROUP}/{VERSION}/namespaces/{{ns}}/{PLURAL}",
    BACKUP_KIND: f"/apis/{GROUP}/{VERSION}/namespaces/{{ns}}/{BACKUP_PLURAL}",
    "Node": "/api/v1/nodes",
    "StorageClass": "/apis/storage.k8s.io/v1/storageclasses",
}


def missing(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 404


def conflict(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 409


def api_client() -> k8s_client.ApiClient:
    """In a pod, its ServiceAccount; elsewhere $KUBECONFIG or ~/.kube/config."""
    try:
        k8s_config.load_incluster_config()
        return k8s_client.ApiClient()
    except k8s_config.ConfigException:
        # Read $KUBECONFIG now: the client's default was fixed when it was imported.
        return k8s_config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"))


class Kube:
    def __init__(self, api: k8s_client.ApiClient, *, timeout: float = 15.0) -> None:
        self.api = api
        self.timeout = timeout

    def _path(self, kind: str, namespace: str | None, name: str | None, sub: str = "") -> str:
        path = _PATHS[kind].format(ns=namespace)
        if name is not None:
            path += f"/{name}"
        return path + (f"/{sub}" if sub else "")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        resp = self.api.call_api(
            path,
            method,
            query_params=list((query or {}).items()),
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
            _request_timeout=self.timeout,
        )
        data = resp.data
        return dict(json.loads(data)) if data else {}

    # -- objects -----------------------------------------------------------------

    def read(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", self._path(kind, namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list(
        self, kind: str, namespace: str | None, selector: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        query = {}
        if selector:
            query["labelSelector"] = ",".join(f"{k}={v}" for k, v in selector.items())
        items = self.request("GET", self._path(kind, namespace, None), query=query).get("items")
        return list(items or [])

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return self.request("POST", self._path(obj["kind"], meta.get("namespace"), None), obj)

    def patch(
        self, kind: str, namespace: str | None, name: str, patch: Mapping[str, Any], sub: str = ""
    ) -> dict[str, Any]:
        return self.request(
            "PATCH",
            self._path(kind, namespace, name, sub),
            patch,
            content_type="application/merge-patch+json",
        )

    def replace(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        path = self._path(obj["kind"], meta.get("namespace"), meta["name"])
        return self.request("PUT", path, obj)

    def delete(self, kind: str, namespace: str | None, name: str) -> None:
        try:
            self.request(
                "DELETE",
                self._path(kind, namespace, name),
                {"propagationPolicy": "Background"},
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    # -- KVClusters --------------------------------------------------------------

    def cluster(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.read(KIND, namespace, name)

    def patch_cluster_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.patch(KIND, namespace, name, {"status": status}, sub="status")

    def event(
        self,
        involved: Mapping[str, Any],
        type_: str,
        reason: str,
        message: str,
    ) -> None:
        """A core/v1 Event about `involved` (what `kubectl describe` lists)."""
        meta = involved["metadata"]
        now = dt.datetime.now(dt.UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        self.create(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
                "involvedObject": {
                    "apiVersion": involved.get("apiVersion", API_VERSION),
                    "kind": involved.get("kind", KIND),
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "uid": meta.get("uid"),
                    "resourceVersion": meta.get("resourceVersion"),
                },
                "type": type_,
                "reason": reason[:128],
                "message": message[:1024],
                "source": {"component": "ringkv-operator", "host": socket.gethostname()},
                "reportingComponent": "ringkv.io/operator",
                "reportingInstance": socket.gethostname()[:128],
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
            }
        )
