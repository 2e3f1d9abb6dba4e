"""``import_tensorflow`` turns TensorFlow's oneDNN kernels on unless the user chose."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from napari_anystar._tf import ONEDNN_ENV

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"),
    reason="TensorFlow's oneDNN switch is read on Linux x86 packages",
)

_PROBE = (
    "import os\n"
    "from napari_anystar._tf import import_tensorflow, ONEDNN_ENV\n"
    "import_tensorflow()\n"
    "from tensorflow.python.util import _pywrap_util_port as port\n"
    "print(os.environ[ONEDNN_ENV], port.IsMklEnabled())\n"
)


def _probe(value: str | None) -> list[str]:
    """The variable and TensorFlow's own oneDNN switch in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != ONEDNN_ENV}
    if value is not None:
        env[ONEDNN_ENV] = value
    done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                          text=True, timeout=300, check=True)
    return done.stdout.split()[-2:]


def test_onednn_is_on_by_default():
    assert _probe(None) == ["1", "True"]


def test_a_users_choice_is_kept():
    assert _probe("0")[0] == "0"
