"""The kubelet's log endpoint, so `kubectl logs` and `read_namespaced_pod_log` work.

The API server proxies `pods/log` to `https://<node InternalIP>:<kubeletEndpoint.Port>/containerLogs/
{namespace}/{pod}/{container}` with its kubelet client certificate; we serve HTTPS with a cert from the
cluster CA and require that client certificate.
"""
from __future__ import annotations

import os
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, unquote, urlsplit

# (namespace, pod, container, previous) -> (log file, is the container still running?) or None
LogSource = Callable[[str, str, str, bool], "tuple[Path, Callable[[], bool]] | None"]


def tail_bytes(data: bytes, lines: int) -> bytes:
    """The last `lines` lines of `data` (a trailing newline does not count as an extra line)."""
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # the body ends when we close: simplest for follow streams
    source: LogSource

    def log_message(self, fmt, *args):  # quiet: the API server polls logs often
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        if len(parts) != 4 or parts[0] != "containerLogs":
            self._error(404, f"not found: {url.path} (the embedded node agent serves containerLogs only)")
            return
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        previous = query.get("previous") == "true"
        found = self.source(parts[1], parts[2], parts[3], previous)
        if found is None:
            self._error(404, f'container "{parts[3]}" in pod "{parts[2]}" has no logs on this node')
            return
        path, running = found
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        data = path.read_bytes()
        if "tailLines" in query:
            data = tail_bytes(data, int(query["tailLines"]))
        limit = int(query["limitBytes"]) if "limitBytes" in query else None
        offset = os.path.getsize(path)
        try:
            self.wfile.write(data[:limit] if limit is not None else data)
            if query.get("follow") == "true" and not previous:
                self._follow(path, offset, running)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _follow(self, path: Path, offset: int, running: Callable[[], bool]) -> None:
        with open(path, "rb") as fh:
            fh.seek(offset)
            while True:
                alive = running()
                chunk = fh.read()
                if chunk:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                elif not alive:
                    return
                else:
                    time.sleep(0.2)

    def _error(self, code: int, message: str) -> None:
        body = message.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class LogServer:
    def __init__(self, port: int, pki_dir: Path, source: LogSource):
        handler = type("Handler", (_Handler,), {"source": staticmethod(source)})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(pki_dir / "kubelet-serving.crt"), str(pki_dir / "kubelet-serving.key"))
        ctx.load_verify_locations(str(pki_dir / "ca.crt"))
        ctx.verify_mode = ssl.CERT_REQUIRED  # only the API server (or another CA-signed client) may read logs
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="log-server", daemon=True)

    def start(self) -> "LogServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
