"""Process-wide settings fplib applies as soon as it is imported (``import fplib``), so every fplib
process gets them without the user setting anything: console scripts, notebook kernels, DataLoader
workers (forked: they inherit the settings; spawned: they import fplib), torchrun ranks and tests.

**The memory allocator (glibc).** By default glibc serves every buffer above a dynamic threshold
(128 KiB .. 32 MiB) with its own ``mmap`` and returns it to the kernel on ``free``, and trims the heap
top above 128 KiB. A CNN's activations and gradients are exactly such buffers, allocated and freed
every step, so the kernel zero-fills and maps them again every step: measured on this project's CPU
recipe (``nafp_small``, 256 windows per step), about 720,000 minor page faults per step, half of the
CPU time in the kernel, and twice the wall time. fplib calls ``mallopt`` to serve large buffers from
the heap (``M_MMAP_MAX = 0``) and to keep up to 2 GiB of freed memory at the heap top for reuse
(``M_TRIM_THRESHOLD``): after that the step page-faults not at all, at the cost of a larger resident
size (about 1.3x the peak with glibc's defaults, because freed memory is kept for the next step).
This is what ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` in the environment do, but it
needs no environment: those variables are read once at process start, before fplib can set them.

Set ``FPLIB_DEFAULT_MALLOC=1`` in the environment to keep glibc's defaults (for instance in a
long-lived process that must give memory back). Other C libraries (musl, macOS, Windows) are left
alone. ``benchmarks/bench_train.py`` measures the effect; ``tests/test_runtime.py`` checks it.
"""

from __future__ import annotations

import ctypes
import os

# mallopt parameters (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # the largest value mallopt takes (an int): 2 GiB
OPT_OUT = "FPLIB_DEFAULT_MALLOC"

allocator: str = "default"  # what configure_allocator did: "glibc tuned", "default", or why not


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):
        return False


def configure_allocator() -> str:
    """Tune glibc's malloc for fplib's workloads (see the module docstring); returns what it did."""
    global allocator
    if os.environ.get(OPT_OUT, "") not in ("", "0"):
        allocator = f"default ({OPT_OUT} is set)"
    elif not _glibc():
        allocator = "default (not glibc)"
    else:
        libc = ctypes.CDLL(None)  # the process itself: glibc is already loaded
        ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        allocator = "glibc tuned" if ok else "default (mallopt refused)"
    return allocator
