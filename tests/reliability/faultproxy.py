"""An HTTPS fault proxy between the operator and the API server (asyncio + aiohttp, in a thread).

TLS is terminated with the API server's own serving certificate (it names 127.0.0.1, and the operator's
kubeconfig already trusts the cluster CA) and re-originated to the real API server, verified against the CA.
The operator's bearer token is forwarded unchanged, so RBAC is exactly the operator's own.

Faults, all switchable while it runs and drawn from a seeded RNG:
- error_rate: that share of requests is answered 503; half of them before forwarding, half AFTER the API
  server has done the work (a lost response: the client must cope with its create having happened);
- silence(): every watch stream open right now stops forwarding bytes but stays open (a silent stream);
- gone_watches: the next N watch requests get a `410 Gone` ERROR event (resourceVersion too old).
Every `Warning` response header is recorded (Pod Security warnings on Job creation).
"""
from __future__ import annotations

import asyncio
import json
import random
import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding",
              "upgrade", "proxy-connection"}
UNAVAILABLE = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "injected by the fault proxy", "reason": "ServiceUnavailable", "code": 503}
GONE_EVENT = {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                          "message": "too old resource version (injected)", "reason": "Expired",
                                          "code": 410}}


@dataclass
class Stats:
    requests: int = 0
    faults_before: int = 0
    faults_after: int = 0
    watches: int = 0
    silenced: int = 0
    gone: int = 0
    by_verb: Counter = field(default_factory=Counter)
    warnings: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, Warning header)


class FaultProxy:
    def __init__(self, upstream: str, pki_dir: Path, seed: int, port: int = 0):
        self.upstream = upstream.rstrip("/")
        self.pki_dir = Path(pki_dir)
        self.rng = random.Random(seed)
        self.error_rate = 0.0
        self.gone_watches = 0
        self.stats = Stats()
        self._port = port
        self._open_watches: set[asyncio.Event] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="fault-proxy")
        self._error: BaseException | None = None

    # --- control (from the test thread) --------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._port}"

    def start(self) -> "FaultProxy":
        self._thread.start()
        if not self._ready.wait(15) or self._error:
            raise RuntimeError(f"fault proxy did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop and self._stopping:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)

    def silence(self) -> int:
        """Freeze every watch stream open now; returns how many."""
        done = threading.Event()
        count = [0]

        def freeze():
            for event in self._open_watches:
                event.set()
            count[0] = len(self._open_watches)
            done.set()
        self._loop.call_soon_threadsafe(freeze)
        done.wait(5)
        return count[0]

    # --- the server ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001  reported to start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ssl.load_cert_chain(self.pki_dir / "apiserver.crt", self.pki_dir / "apiserver.key")
        client_ssl = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        self._session = ClientSession(connector=TCPConnector(ssl=client_ssl, limit=0), auto_decompress=True,
                                      timeout=ClientTimeout(total=None, sock_connect=10))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self._port, ssl_context=server_ssl)
        await site.start()
        self._port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stopping.wait()
        for event in self._open_watches:
            event.set()
        await runner.cleanup()
        await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        stats = self.stats
        stats.requests += 1
        watch = request.query.get("watch") in ("true", "1")
        stats.by_verb["WATCH" if watch else request.method] += 1
        fault = self.rng.random() < self.error_rate
        after = fault and self.rng.random() < 0.5
        if fault and not after:
            stats.faults_before += 1
            return web.json_response(UNAVAILABLE, status=503)
        if watch and self.gone_watches > 0:
            self.gone_watches -= 1
            stats.gone += 1
            return web.Response(status=200, content_type="application/json", text=json.dumps(GONE_EVENT) + "\n")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        async with self._session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                         data=body or None, allow_redirects=False,
                                         # The kubernetes client sends bodies without a Content-Type (the API
                                         # server assumes JSON); aiohttp's default octet-stream would get a 415.
                                         skip_auto_headers=("Content-Type",)) as upstream:
            for warning in upstream.headers.getall("Warning", []):
                stats.warnings.append((request.method, request.path, warning))
            if after:  # the API server did the work; the client never hears of it
                stats.faults_after += 1
                return web.json_response(UNAVAILABLE, status=503)
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
            if not watch:
                payload = await upstream.read()
                return web.Response(status=upstream.status, headers=out_headers, body=payload)
            return await self._stream(request, upstream, out_headers)

    async def _stream(self, request: web.Request, upstream, headers: dict) -> web.StreamResponse:
        self.stats.watches += 1
        frozen = asyncio.Event()
        self._open_watches.add(frozen)
        response = web.StreamResponse(status=upstream.status, headers=headers)
        await response.prepare(request)
        try:
            reader = asyncio.ensure_future(upstream.content.readany())
            while True:
                freeze = asyncio.ensure_future(frozen.wait())
                done, _ = await asyncio.wait({reader, freeze}, return_when=asyncio.FIRST_COMPLETED)
                if frozen.is_set():
                    reader.cancel()
                    self.stats.silenced += 1
                    # Silent but open: only the client's own timeout (or the proxy stopping) ends it.
                    while not self._stopping.is_set() and request.transport and not request.transport.is_closing():
                        await asyncio.sleep(0.5)
                    return response
                freeze.cancel()
                chunk = reader.result()
                if not chunk:
                    break
                await response.write(chunk)
                reader = asyncio.ensure_future(upstream.content.readany())
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._open_watches.discard(frozen)
        return response
