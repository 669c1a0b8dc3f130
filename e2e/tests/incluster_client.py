"""The e2e tests' client inside the kind cluster (mounted into a pod of the node image).

    python incluster_client.py load N     put N keys, read them all back
    python incluster_client.py run        put fresh keys until /tmp/stop exists (and
                                          read an earlier one back after every put),
                                          then read every acknowledged one back
    python incluster_client.py digest     list every key and read its value: prints
                                          {"keys": n, "sha256": ...} of the sorted pairs

Both print one JSON line: how many writes were acknowledged and failed, how
many reads failed or saw another value while writing (`read_failed`,
`read_wrong`), how many acknowledged keys did not read back at the end
(`lost`, with a few examples), and the longest stretch of consecutive failed
writes in seconds (`worst_gap_s`).
It reaches the cluster the way users do: `RINGKV_URL` (the client Service's
DNS name) and `RINGKV_TOKEN` (from the cluster's Secret). Exit 1 if any
acknowledged write is lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time

from ringkv import Client
from ringkv.errors import RingkvError

MAX_RUN_S = 1800.0


def digest(kv: Client) -> int:
    sha = hashlib.sha256()
    n = 0
    for key in kv.iter_keys():  # in key order
        value = kv.get(key)
        if value is None:  # deleted or expired since it was listed
            continue
        sha.update(
            len(key).to_bytes(4, "big") + key.encode() + len(value).to_bytes(4, "big") + value
        )
        n += 1
    print(json.dumps({"keys": n, "sha256": sha.hexdigest()}), flush=True)
    return 0


def main() -> int:
    mode = sys.argv[1]
    kv = Client(os.environ["RINGKV_URL"], token=os.environ["RINGKV_TOKEN"], timeout=5.0)
    if mode == "digest":
        return digest(kv)
    acked: dict[str, bytes] = {}
    order: list[str] = []
    failed = read_failed = read_wrong = 0
    worst_gap = 0.0
    failing_since: float | None = None
    errors: dict[str, int] = {}
    count = int(sys.argv[2]) if mode == "load" else None
    started = time.monotonic()
    n = 0
    while True:
        if count is not None and n >= count:
            break
        if count is None and (
            os.path.exists("/tmp/stop") or time.monotonic() - started > MAX_RUN_S
        ):
            break
        key, value = f"{mode}-{n:07d}", f"value-{n}".encode() * 4
        n += 1
        try:
            kv.put(key, value)
        except RingkvError as exc:
            failed += 1
            name = type(exc).__name__
            errors[name] = errors.get(name, 0) + 1
            if failing_since is None:
                failing_since = time.monotonic()
            time.sleep(0.02)
            continue
        if failing_since is not None:
            worst_gap = max(worst_gap, time.monotonic() - failing_since)
            failing_since = None
        acked[key] = value
        order.append(key)
        if count is None:  # while writing, a quorum read of an earlier write
            earlier = random.choice(order)
            try:
                if kv.get(earlier) != acked[earlier]:
                    read_wrong += 1
            except RingkvError:
                read_failed += 1
    if failing_since is not None:
        worst_gap = max(worst_gap, time.monotonic() - failing_since)
    lost = []
    for key, value in acked.items():
        for attempt in range(5):
            try:
                if kv.get(key) != value:
                    lost.append(key)
                break
            except RingkvError:
                time.sleep(0.5 * (attempt + 1))
        else:
            lost.append(key)
    kv.close()
    print(
        json.dumps(
            {
                "acked": len(acked),
                "failed": failed,
                "read_failed": read_failed,
                "read_wrong": read_wrong,
                "errors": errors,
                "lost": len(lost),
                "lost_examples": lost[:5],
                "worst_gap_s": round(worst_gap, 3),
                "seconds": round(time.monotonic() - started, 1),
            }
        ),
        flush=True,
    )
    return 1 if lost or read_wrong else 0


if __name__ == "__main__":
    sys.exit(main())
