"""glibc's allocator entry points, loaded once (heap.py trims with them, memstats.py reads their statistics)."""
from __future__ import annotations

import ctypes
import functools


class MallInfo2(ctypes.Structure):  # glibc >= 2.33, struct mallinfo2 (all size_t)
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # musl or another libc: nothing of glibc's to call
        return None


def function(name: str, argtypes: list, restype):
    """glibc's `name` with its C signature, or None where this libc (or this glibc version) has none."""
    libc = _libc()
    fn = getattr(libc, name, None) if libc is not None else None
    if fn is not None:
        fn.argtypes, fn.restype = argtypes, restype
    return fn


def load_malloc_trim():
    return function("malloc_trim", [ctypes.c_size_t], ctypes.c_int)


def load_mallinfo2():
    return function("mallinfo2", [], MallInfo2)
