"""A TCP forwarder on 127.0.0.1, and a stand-in for `kubectl port-forward` built on it.

Through `kubectl port-forward svc/kv` a laptop reaches one node, and nothing
else of the cluster: that is what `direct=False` and `kubectl ringkv connect`
are for. Tier 3 has no kubelet, so real port-forwarding cannot run there;
`main()` plays `kubectl` for `kubectl-ringkv connect` (through `$KUBECTL`,
the plugin's own seam) and forwards to a real node process instead. It
prints what kubectl prints (`Forwarding from 127.0.0.1:PORT -> 8080`, a
`Handling connection for PORT` line per connection), writes its argv to
`$STANDIN_ARGV` and, with `$STANDIN_DIE_AFTER=N`, exits 1 with an
`error: lost connection to pod` line after N connections (a pod that went).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable


class Forwarder:
    """Listens on 127.0.0.1 and copies bytes both ways to `target` for each connection."""

    def __init__(self, target: tuple[str, int], port: int = 0) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", port))
        self.port = int(self.server.getsockname()[1])
        self.connections = 0
        self.on_close: Callable[[int], None] = lambda count: None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, on_connect: Callable[[], None] = lambda: None) -> Forwarder:
        self._on_connect = on_connect
        self._thread.start()
        return self

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            self._on_connect()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            conn.close()
            return
        done = threading.Event()

        def pipe(src: socket.socket, dst: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while chunk := src.recv(65536):
                    dst.sendall(chunk)
            done.set()

        threading.Thread(target=pipe, args=(upstream, conn), daemon=True).start()
        pipe(conn, upstream)
        done.wait(10)
        for s in (conn, upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self.on_close(self.connections)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()


def main() -> int:
    """`kubectl port-forward svc/NAME [LOCAL]:8080 ...`, forwarding to $STANDIN_TARGET."""
    args = sys.argv[1:]
    if os.environ.get("STANDIN_ARGV"):
        with open(os.environ["STANDIN_ARGV"], "w") as out:
            json.dump(args, out)
    if not args or args[0] != "port-forward":
        print(f"error: the stand-in only port-forwards, not {args}", file=sys.stderr)
        return 1
    ports = next(a for a in args[1:] if ":" in a and not a.startswith("-"))
    local = ports.split(":")[0]
    host, _, port = os.environ["STANDIN_TARGET"].rpartition(":")
    fwd = Forwarder((host, int(port)), int(local or 0))
    die_after = int(os.environ.get("STANDIN_DIE_AFTER", "0"))
    stop = threading.Event()

    def closed(count: int) -> None:
        if die_after and count >= die_after:
            print("error: lost connection to pod", file=sys.stderr, flush=True)
            stop.set()

    fwd.on_close = closed
    fwd.start(lambda: print(f"Handling connection for {fwd.port}", flush=True))
    print(f"Forwarding from 127.0.0.1:{fwd.port} -> {ports.split(':')[1]}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait(600)
    fwd.close()
    return 1 if die_after and fwd.connections >= die_after else 0


if __name__ == "__main__":
    sys.exit(main())
