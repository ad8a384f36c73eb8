"""Keep freed memory in a training process (glibc): no page faults for every step's activations.

A training step allocates the same large activation and gradient buffers and frees them again,
every step. glibc's malloc serves such blocks with mmap or at the top of its heap and, by its
dynamic thresholds, hands them back to the kernel on free; the next step then faults every page
in again. For `fastcnn` at batch 64 on the 2-core development CPU that is 400–1,800 minor page
faults per step. With the mmap threshold at its 32 MiB maximum and the trim threshold at
256 MiB, blocks are reused from the heap and the faults drop to ~0: the step takes 0.87× the
time (paired runs, benchmarks/malloc_faults.py; docs/results.md, "Time to accuracy").

Both thresholds must be set together: setting either one switches glibc's dynamic thresholds
off, and the mmap threshold alone (trim stays 128 KiB) or the trim threshold alone (mmap stays
128 KiB, every activation an mmap) makes the step slower than the default (1.2× and 2× here).
The cost is that up to 256 MiB freed at the heap's top stays with the process — what a training
process wants. Set for a process that trains (the `lightship` command and study workers), not on
``import lightship``: a notebook's allocator stays as its user left it.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's upper limit for it on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 256 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Set the two thresholds on glibc (Linux); True when both were set, else nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has no mallopt thresholds)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if not mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD):
        return False  # refused: glibc's dynamic thresholds are still on, as before
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
