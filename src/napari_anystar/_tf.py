"""Importing TensorFlow safely inside napari.

TensorFlow's shared libraries carry their own copy of LLVM. napari's OpenGL context on Mesa
(llvmpipe: virtual machines, remote desktops, Xvfb) loads the system's libLLVM first, and
TensorFlow's LLVM static initialisers then bind to it and crash the process (segfault on
import, or at exit). Loading TensorFlow with ``RTLD_DEEPBIND`` makes its libraries resolve
their own symbols first, so both coexist whichever is loaded first. Every import of
TensorFlow or ``stardist.models`` in this package goes through :func:`import_tensorflow`,
which also selects Keras 2 (the ``tf-keras`` package) for StarDist: the format the paper's
AnyStar weights and StarDist 0.8 models were saved with.
"""

from __future__ import annotations

import os
import sys
import warnings
from types import ModuleType

# TensorFlow switches Python's dlopen flags to RTLD_GLOBAL while it loads when this module
# imports; making the import fail keeps the flags chosen below.
_TF_GLOBAL_FLAGS_MODULE = "tensorflow.python.pywrap_dlopen_global_flags"


def import_tensorflow() -> ModuleType:
    """Import (once) and return ``tensorflow`` with its symbols bound locally."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
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
