"""The operator process's probes: `/healthz` (alive) and `/readyz` (waiting or running).

Served from the start, on a thread, so that an instance waiting for the
leader Lease answers (it must not be restarted for waiting). kopf's own
liveness endpoint only exists once kopf runs, which a waiting instance never
gets to. Whether an instance leads is in the Lease and in the
`ringkv_operator_leader` metric.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["HealthServer"]


class HealthServer:
    def __init__(self, port: int, alive: Callable[[], bool], ready: Callable[[], bool]) -> None:
        checks = {"/healthz": alive, "/readyz": ready}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                check = checks.get(self.path)
                ok = check is not None and check()
                body = b"ok\n" if ok else (b"not found\n" if check is None else b"not ok\n")
                self.send_response(200 if ok else 404 if check is None else 503)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # probes every few seconds would drown the log

        self.server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="ringkv-health", daemon=True
        )

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
