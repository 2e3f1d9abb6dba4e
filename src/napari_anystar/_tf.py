"""Importing TensorFlow safely inside napari.

TensorFlow's shared libraries carry their own copy of LLVM. napari's OpenGL context on Mesa
(llvmpipe: virtual machines, remote desktops, Xvfb) loads the system's libLLVM first, and
TensorFlow's LLVM static initialisers then bind to it and crash the process (segfault on
import, or at exit). Loading TensorFlow with ``RTLD_DEEPBIND`` makes its libraries resolve
their own symbols first, so both coexist whichever is loaded first. Every import of
TensorFlow or ``stardist.models`` in this package goes through :func:`import_tensorflow`,
which also selects Keras 2 (the ``tf-keras`` package) for StarDist: the format the paper's
AnyStar weights and StarDist 0.8 models were saved with, and turns on TensorFlow's oneDNN
kernels (:data:`ONEDNN_ENV`).

Every TensorFlow call then runs on one owner thread (:func:`tf_call`, :func:`tf_owned`).
"""

from __future__ import annotations

import atexit
import os
import queue
import sys
import threading
import warnings
from collections.abc import Callable, Generator
from concurrent.futures import Future
from types import ModuleType
from typing import Any, TypeVar

T = TypeVar("T")
Y = TypeVar("Y")
R = TypeVar("R")

# TensorFlow switches Python's dlopen flags to RTLD_GLOBAL while it loads when this module
# imports; making the import fail keeps the flags chosen below.
_TF_GLOBAL_FLAGS_MODULE = "tensorflow.python.pywrap_dlopen_global_flags"
#: TensorFlow's Linux x86 packages run convolutions with its oneDNN kernels only on CPUs with
#: AVX-512 VNNI/BF16 or AMX; on others (AVX2: most laptops and desktops, AMD EPYC servers)
#: and on Windows they stay off unless this variable is 1. There its own 3-D convolutions
#: run the network about 3x slower (2 AVX2 cores, the bundled model: a 128^3 input 1.37 s
#: against 0.47 s; a training step 2.1 s against 0.65 s), for outputs that differ only by
#: float rounding (probabilities within 2e-6). A value the user set is kept.
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"


def import_tensorflow() -> ModuleType:
    """Import (once) and return ``tensorflow`` with its symbols bound locally."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault(ONEDNN_ENV, "1")
    warnings.filterwarnings("ignore", message="Using Keras 2 .via 'tf_keras' package.")
    # csbdeep's note that StarDist's multi-channel output is not de-normalised: expected.
    warnings.filterwarnings("ignore", message="skipping normalization step after prediction")
    deepbind = getattr(os, "RTLD_DEEPBIND", None)
    if deepbind is None:  # not glibc (macOS, Windows): nothing to isolate
        import tensorflow

        return tensorflow
    previous = sys.getdlopenflags()
    sys.modules.setdefault(_TF_GLOBAL_FLAGS_MODULE, None)  # type: ignore[arg-type]
    sys.setdlopenflags(os.RTLD_NOW | os.RTLD_LOCAL | deepbind)
    try:
        import tensorflow
    finally:
        sys.setdlopenflags(previous)
    return tensorflow


def stardist_models() -> ModuleType:
    """``stardist.models``, imported after TensorFlow was loaded safely."""
    import_tensorflow()
    import stardist.models

    return stardist.models


# --------------------------------------------------------------------------- owner thread
# TensorFlow keeps per-thread Python state: Keras calls from short-lived or re-used worker
# threads (napari's thread pool) end in segfaults or deadlocks on the second or third job.
# So every TensorFlow call of the package runs on one long-lived thread, whatever thread
# asks for it: :func:`tf_call` for a single call, :func:`tf_owned` for a generator whose
# every step (between two yields) runs there, so cancelling between steps still works.

#: How long quitting waits for a running TensorFlow call (one tile, one training step).
EXIT_WAIT_S = 30.0
_owner: _OwnerThread | None = None
_owner_lock = threading.Lock()


class _OwnerThread(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="anystar-tensorflow", daemon=True)
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.closing = False
        self.idle = threading.Event()
        self.idle.set()

    def run(self) -> None:
        while True:
            fn, args, kwargs, future = self.jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            self.idle.clear()
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the caller, who re-raises it
                future.set_exception(exc)
            finally:
                self.idle.set()


def _owner_thread() -> _OwnerThread:
    global _owner
    with _owner_lock:
        if _owner is None:
            _owner = _OwnerThread()
            _owner.start()
            atexit.register(_wait_at_exit, _owner)
        return _owner


def _wait_at_exit(owner: _OwnerThread) -> None:
    """Refuse new calls and let a running one finish, so the process exits cleanly."""
    owner.closing = True
    owner.idle.wait(EXIT_WAIT_S)


def on_owner_thread() -> bool:
    """Is the calling thread the TensorFlow owner thread?"""
    return _owner is not None and threading.current_thread() is _owner


def tf_call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` run on the owner thread; its result or exception, here."""
    if on_owner_thread():
        return fn(*args, **kwargs)
    owner = _owner_thread()
    if owner.closing:
        raise RuntimeError("Python is shutting down; TensorFlow takes no more work.")
    future: Future = Future()
    owner.jobs.put((fn, args, kwargs, future))
    return future.result()


def _step(generator: Generator, value: Any) -> tuple[bool, Any]:
    try:
        return False, generator.send(value)
    except StopIteration as stop:
        return True, stop.value


def tf_owned(generator: Generator[Y, Any, R]) -> Generator[Y, Any, R]:
    """``generator`` with each step run on the owner thread: same yields, sends and return
    value; closing this closes ``generator`` there (its ``finally`` blocks included)."""
    value = None
    try:
        while True:
            done, out = tf_call(_step, generator, value)
            if done:
                return out
            value = yield out
    finally:
        tf_call(generator.close)
