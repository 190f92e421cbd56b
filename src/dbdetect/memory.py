"""glibc malloc settings for torch's CPU tensors: keep freed blocks, share one arena.

:func:`keep_freed_memory` (Detector and ``dbdetect train`` call it). Why: torch's CPU
tensors come from ``malloc``. glibc serves a block above its mmap threshold (at most
32 MiB, adjusted as the program runs) with a fresh ``mmap`` and unmaps it on ``free``,
and trims the heap top above 128 KiB. A DBNet forward pass at side 1280 makes feature
maps of tens of MiB, so each pass page-faults and zero-fills them all again. Measured
here, ``ppocrv4_ic15`` at its registry side (1280) ran at about 800 ms per image with
glibc's defaults and 445 ms with the two thresholds below, the speed of onnxruntime,
whose arena keeps its memory; a training step (batch 8, crops 640-960) went from 17.5
to 8.6 s. This is what ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` in the
environment do (or a preloaded jemalloc / tcmalloc, as PyTorch's CPU tuning guide
suggests); doing it here gives every user the speed without a launcher.

:func:`single_malloc_arena` (``dbdetect detect`` calls it before its stream threads).

The cost: the process keeps up to ``trim_threshold`` of freed memory for reuse
instead of returning it. ``DBDETECT_MALLOC=0`` leaves malloc as it is.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt parameter numbers, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD")

_state: dict = {}


def keep_freed_memory(mmap_threshold: int = 256 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once).

    Called by :class:`dbdetect.Detector` on the CPU (either backend) and by ``dbdetect
    train``. Does nothing, and returns False, when the C library is not glibc, when
    ``DBDETECT_MALLOC=0``, or when the environment already chooses (any
    ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``, or an ``LD_PRELOAD``
    allocator): the user's choice wins.

    Returns:
        True when the thresholds are (now or already) set by dbdetect.
    """
    if "done" in _state:
        return _state["done"]
    _state["done"] = done = _apply(mmap_threshold, trim_threshold)
    return done


def _glibc_mallopt():
    """glibc's ``mallopt``, or None (not Linux, or another C library: musl's is a no-op)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        _ = libc.gnu_get_libc_version  # only glibc has it: AttributeError elsewhere
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt


def _apply(mmap_threshold: int, trim_threshold: int) -> bool:
    if os.environ.get("DBDETECT_MALLOC", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    mallopt = _glibc_mallopt()
    if mallopt is None or any(os.environ.get(k) for k in _USER_SETTINGS):
        return False
    # mallopt returns 1 on success. The mmap threshold goes first: setting it also stops
    # glibc from moving both thresholds on its own. Some glibc versions refuse more than
    # 32 MiB (their compile-time maximum on 64-bit); then take that.
    if not (mallopt(_M_MMAP_THRESHOLD, mmap_threshold) or mallopt(_M_MMAP_THRESHOLD, min(mmap_threshold, 32 << 20))):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def single_malloc_arena() -> bool:
    """Ask glibc's malloc to serve all threads from one arena; ``False`` where that is not glibc.

    Call it before the stream threads start, in a process you own (``dbdetect
    detect`` does). Each thread that runs a forward pass otherwise gets an
    arena of its own, and memory freed in one is not reused by the other:
    measured on 12 ICDAR 2015 images with 2 streams, peak memory over the
    loaded model +392 MB with the default arenas and +331 MB with one (one
    stream: +167 MB); speed stayed within this machine's noise.
    """
    mallopt = _glibc_mallopt()
    return mallopt is not None and bool(mallopt(_M_ARENA_MAX, 1))
