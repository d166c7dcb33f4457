"""Keep freed memory in the process between training steps (glibc's malloc only).

A training step allocates and frees the same ~200 MB of activations every step. By default glibc
returns the top of its heap to the operating system once more than a few tens of MB are free there,
and serves arrays above a size threshold with fresh mmap's, so the next step touches new pages again:
~12k page faults per step measured on the bench's training setting, each a trip into the kernel that
also zeroes a 4 KiB page. Raising the trim threshold keeps the freed pages for the next step (the
resident size stays at the step's peak, which it reaches every step anyway); fixing the mmap
threshold at its maximum (32 MiB on 64-bit) keeps every activation array in that heap. After the
first step, a step then takes no page faults at all.

NumbaBackend calls keep_freed_memory() when it trains in fused mode. It changes the allocator of the
whole process, once; elsewhere than glibc it does nothing.
"""
import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3          # mallopt parameter numbers (malloc.h)
TRIM_THRESHOLD = 1 << 30                              # return free heap top to the OS only beyond 1 GiB
MMAP_THRESHOLD = 32 << 20                             # glibc's largest allowed value on 64-bit
_done = False


def keep_freed_memory():
    """Set the two thresholds once per process; returns True if glibc accepted them."""
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    _done = bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return _done
