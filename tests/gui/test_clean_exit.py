"""Closing napari while a plugin worker runs ends the process cleanly (exit status 0)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("exit_script.py")
EXIT_TIMEOUT_S = 600


@pytest.mark.parametrize("mode", ["docked", "preview", "run", "warmup", "train"])
def test_quitting_with_workers_running_exits_cleanly(mode, tmp_path):
    env = {**os.environ, "ANYSTAR_HOME": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(SCRIPT), mode], env=env, capture_output=True,
                          text=True, timeout=EXIT_TIMEOUT_S)
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert "closed" in proc.stdout, tail
    assert proc.returncode == 0, tail
    assert "Traceback" not in proc.stderr, tail
