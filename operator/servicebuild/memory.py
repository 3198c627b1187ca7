"""Handing back to the system the memory a burst of work leaves behind.

Thousands of ServiceBuilds handled at once (a start among them, or many created together) parse thousands
of API answers in Kopf's workers and the reconcile threads. Once handled, most of that memory is free
inside the process but stays resident: glibc keeps freed chunks in its per-thread arenas (64 MiB regions)
and at the top of each heap. `malloc_trim(0)` returns their free pages. Only glibc has it; elsewhere (musl,
macOS) releasing is a garbage collection alone.
"""

import ctypes
import functools
import gc
from collections.abc import Callable

Trim = Callable[[], object]
"""Returns the C heap's free pages to the system."""


def _nothing() -> None:
    """Where the C library cannot trim its heap."""


def malloc_trim() -> Trim:
    """glibc's `malloc_trim(0)`, looked up in the running process; a no-op where the C library has none."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return _nothing
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return functools.partial(trim, 0)


def release_after_burst(trim: Trim) -> None:
    """After a burst: collect the cycles it left (Kopf's per-object workers leave some), then trim."""
    gc.collect()
    trim()
