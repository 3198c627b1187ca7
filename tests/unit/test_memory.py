"""We test that releasing memory after a burst collects the cycles it left before trimming the C heap, and
that the trim is glibc's own `malloc_trim` on this (glibc) platform, which the operator's image is too."""

import gc
import platform
import weakref

from servicebuild import memory


class Node:
    """An object in a reference cycle: only the cycle collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_a_release_collects_the_cycles_left_before_it_trims() -> None:
    alive_when_trimmed: list[bool] = []
    gc.disable()  # as if no automatic collection had come since the burst
    try:
        cycle = weakref.ref(Node())
        assert cycle() is not None, "only the collector frees a cycle"

        memory.release_after_burst(lambda: alive_when_trimmed.append(cycle() is not None))
    finally:
        gc.enable()

    assert alive_when_trimmed == [False]


def test_the_trim_is_glibcs_malloc_trim_here() -> None:
    assert platform.libc_ver()[0] == "glibc"
    trim = memory.malloc_trim()

    assert trim() in (0, 1), "malloc_trim returns 1 when it released memory, else 0"
