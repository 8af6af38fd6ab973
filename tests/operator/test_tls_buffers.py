"""tls_buffers.py: 16 KiB read buffers per TLS connection, and large bodies still arrive whole."""
from __future__ import annotations

import asyncio
import gc
import hashlib
import ssl
from asyncio import sslproto

from aiohttp import web

from quranft.operator import tls_buffers
from quranft.operator.progress_tls import server_tls


def test_small_buffers_carry_a_large_body_both_ways(monkeypatch):
    monkeypatch.setattr(sslproto.SSLProtocol, "max_size", sslproto.SSLProtocol.max_size)  # restored afterwards
    tls_buffers.shrink()
    body = bytes(range(256)) * 8192  # 2 MiB: 128 of the small buffers

    earlier = {id(o) for o in gc.get_objects() if isinstance(o, sslproto.SSLProtocol)}  # other tests' connections

    async def scenario():
        async def echo(request):
            got = await request.read()
            buffers = {len(o._ssl_buffer) for o in gc.get_objects()
                       if isinstance(o, sslproto.SSLProtocol) and id(o) not in earlier}
            return web.Response(body=got, headers={"X-Buffers": ",".join(map(str, sorted(buffers)))})
        app = web.Application(client_max_size=4 * len(body))
        app.router.add_post("/", echo)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        tls = server_tls("", "", "", ["127.0.0.1"])
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.context)
        await site.start()
        port = runner.addresses[0][1]
        context = ssl.create_default_context(cadata=tls.ca_pem)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)  # an asyncio TLS client too
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        reply = await reader.read()
        writer.close()
        await runner.cleanup()
        return reply
    reply = asyncio.run(scenario())
    head, _, got = reply.partition(b"\r\n\r\n")
    assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
    assert b"X-Buffers: 16384\r\n" in head  # the server's and the client's connection alike
