"""The package raises glibc's malloc arena cap when imported, so that render threads started
later do not share an arena with each other (see ``napari_anystar._malloc``)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from napari_anystar._malloc import MIN_MALLOC_ARENAS

COUNT_ARENAS = """
import ctypes, ctypes.util, sys, tempfile, threading
if sys.argv[1] == "package":
    import napari_anystar  # noqa: F401
n = int(sys.argv[2])
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.fopen.restype = ctypes.c_void_p
barrier = threading.Barrier(n + 1)
def hold():
    libc.malloc(1 << 16)   # this thread's first allocation picks its arena
    barrier.wait()
    barrier.wait()
threads = [threading.Thread(target=hold) for _ in range(n)]
for t in threads:
    t.start()
barrier.wait()
with tempfile.NamedTemporaryFile(suffix=".xml") as f:
    fp = libc.fopen(f.name.encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(fp))
    libc.fclose(ctypes.c_void_p(fp))
    print(open(f.name).read().count("<heap nr="))
barrier.wait()
"""

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")


def _arenas(mode: str, threads: int) -> int:
    out = subprocess.run([sys.executable, "-c", COUNT_ARENAS, mode, str(threads)],
                         capture_output=True, text=True, check=True, timeout=120)
    return int(out.stdout.strip().splitlines()[-1])


@glibc_only
@pytest.mark.skipif(8 * (os.cpu_count() or 1) + 8 > MIN_MALLOC_ARENAS,
                    reason="glibc's own cap already leaves room on this many cores")
def test_importing_the_package_gives_later_threads_arenas_of_their_own():
    threads = 8 * (os.cpu_count() or 1) + 8     # more than glibc's own cap allows
    plain, ours = _arenas("plain", threads), _arenas("package", threads)
    assert plain <= 8 * (os.cpu_count() or 1) + 1          # capped: threads share arenas
    assert ours >= threads                                 # one per thread (and main's)
