"""A 16 KiB read buffer per TLS connection of the event loop instead of asyncio's 256 KiB.

asyncio's SSLProtocol allocates `max_size` (256 KiB) for every connection up front (python/cpython#109534, "TLS/SSL
asyncio leaks memory"). The operator holds a TLS connection per pushing training pod (progress_server.py) and per
watch stream (kopf): the tracemalloc run with 150 runs pushing found 124 of these buffers alive, 31 MiB, the largest
single item of the operator's heap. A TLS record carries at most 16 KiB of plaintext, and the protocol reads in a
loop until the TLS object is drained, so a 16 KiB buffer only takes more, smaller reads of a large body.
"""
from __future__ import annotations

from asyncio import sslproto

READ_BUFFER_BYTES = 16 * 1024


def shrink() -> None:
    """Before any TLS connection is made (connections made earlier keep their buffer)."""
    sslproto.SSLProtocol.max_size = READ_BUFFER_BYTES
