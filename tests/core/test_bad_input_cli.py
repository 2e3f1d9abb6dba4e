"""Issue 13's bad-input table for the command line: one row per input, each checking the
one-line message, the exit status, which files were written and that no user file (inputs,
existing outputs, model folders, the remembered-models list) changed.

Related cases with more detail: ``test_cli_segment.py`` (batch skipping, path errors),
``test_cli_models.py`` (broken folders), ``test_train_validation.py`` (staging folders).
"""
# ruff: noqa: F811  (the imported model_dir fixture is used as an argument)

from __future__ import annotations

import errno
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage
from test_cli_segment import model_dir  # noqa: F401

from napari_anystar import cli, volume_io
from napari_anystar._paths import user_models_dir
from napari_anystar.model import object_size, registry, segmenter
from napari_anystar.train import checkpoint

SHAPE = (24, 32, 40)
DENIED = "Permission denied"


def volume(centres: list[tuple[int, int, int]], seed: int = 0) -> np.ndarray:
    """Bright Gaussian nuclei (sigma 3) at ``centres`` on noise, uint16."""
    grid = np.indices(SHAPE, dtype=np.float32)
    image = np.random.default_rng(seed).normal(100, 5, SHAPE).astype(np.float32)
    for centre in centres:
        image += 800 * np.exp(-sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) / 18)
    return image.astype(np.uint16)


NUCLEI = [(6, 8, 8), (6, 24, 30), (17, 9, 31), (17, 24, 10)]


def tif(path: Path, array: np.ndarray) -> Path:
    tifffile.imwrite(path, array, photometric="minisblack")
    return path


def segment(inputs: list[Path], out: Path, model: Path, scale: str = "1") -> list[str]:
    """``anystar segment`` arguments."""
    return ["segment", *map(str, inputs), "--out", str(out), "--model", str(model), "--scale",
            scale]


def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every file and folder under ``roots``: its content hash and mtime (folders: "dir")."""
    found: dict[str, tuple] = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_dir():
                found[str(path)] = ("dir",)
            else:
                found[str(path)] = (hashlib.sha256(path.read_bytes()).hexdigest(),
                                    path.stat().st_mtime_ns)
    return found


@dataclass(frozen=True)
class Case:
    """What a row runs and what must come of it."""

    argv: list[str]  # after "anystar"
    code: int
    line: str  # the message, exactly (regular expression where ``pattern``)
    written: tuple[Path, ...] = ()  # files the command creates; nothing else may change
    only_line: bool = True  # the message is all of stderr (else: one of its lines)
    stream: str = "err"  # where the message goes: "err" or "out"
    runs: int = 0  # segmentations run (0: refused before any work)
    pattern: bool = False
    absent: str = ""  # a text the output must not hold


# ---------------------------------------------------------------------- fixtures
@pytest.fixture
def read_only(monkeypatch):
    """Make folders no file can be created in: mode 0o555, and (as root ignores modes) the
    temporary-file probe and writes there fail with EACCES as a read-only mount would."""
    blocked: list[Path] = []
    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        folder = kwargs.get("dir")
        if folder is not None and Path(folder).resolve() in blocked:
            raise PermissionError(errno.EACCES, DENIED, str(folder))
        return real(*args, **kwargs)

    monkeypatch.setattr(volume_io.tempfile, "mkstemp", mkstemp)

    def make(folder: Path) -> Path:
        folder.mkdir()
        folder.chmod(0o555)
        blocked.append(folder.resolve())
        return folder

    yield make
    for folder in blocked:
        folder.chmod(0o755)


@pytest.fixture
def runs(monkeypatch):
    """The scale of every segmentation run (``segmenter.network_job``), in order."""
    real = segmenter.network_job
    scales: list = []

    def spy(entry, image, settings, thresholds, cache, **kwargs):
        result = yield from real(entry, image, settings, thresholds, cache, **kwargs)
        scales.append(result.settings.scale)
        return result

    monkeypatch.setattr(segmenter, "network_job", spy)
    return scales


@pytest.fixture
def blob_sizes(monkeypatch):
    """A stand-in for the network's object measurement of ``--scale auto`` (a random-weight
    test model finds no real nuclei): the connected bright blobs of the image, each ~9.6
    voxels across; too few raise ``TooFewObjectsError`` as the network's count would."""
    def estimate(model, image, settings, prob, **kwargs):
        yield 0, 1
        n_objects = ndimage.label(np.asarray(image) > 400)[1]
        if n_objects < object_size.MIN_OBJECTS:
            raise object_size.TooFewObjectsError(n_objects, (1.0, 1.0, 1.0))
        yield 1, 1
        return object_size.SizeEstimate((1.25, 1.25, 1.25), (9.6, 9.6, 9.6), n_objects)

    monkeypatch.setattr(object_size, "estimate_scale", estimate)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# -------------------------------------------------------------------------- rows
def _auto_scale_too_few(tmp: Path, model: Path, fixtures: dict) -> Case:
    inputs = [tif(tmp / "a.tif", volume(NUCLEI)), tif(tmp / "b.tif", volume([], 1))]
    out = tmp / "out"
    return Case(segment(inputs, out, model, "auto"), 0,
                "b.tif: warning: found 0 object(s), too few to measure their size: using the "
                "fallback scale (1, 1, 1).",
                written=(out / "a_labels.tif", out / "b_labels.tif"), only_line=False, runs=2)


def _unwritable_out_folder(tmp: Path, model: Path, fixtures: dict) -> Case:
    out = fixtures["read_only"](tmp / "out")
    inputs = [tif(tmp / "a.tif", volume(NUCLEI)), tif(tmp / "b.tif", volume(NUCLEI, 1))]
    return Case(segment(inputs, out, model), 2,
                f"anystar segment: error: cannot write to {out}: {DENIED}")


def _new_folder_in_unwritable_one(tmp: Path, model: Path, fixtures: dict) -> Case:
    parent = fixtures["read_only"](tmp / "shared")
    inputs = [tif(tmp / "a.tif", volume(NUCLEI)), tif(tmp / "b.tif", volume(NUCLEI, 1))]
    out = parent / "mine"
    return Case(segment(inputs, out, model), 2,
                f"anystar segment: error: cannot create {out}: {parent} is not writable "
                f"({DENIED})")


def _unwritable_output_file(tmp: Path, model: Path, fixtures: dict) -> Case:
    folder = fixtures["read_only"](tmp / "results")
    image = tif(tmp / "a.tif", volume(NUCLEI))
    out = folder / "a_seg.tif"
    return Case(segment([image], out, model), 2,
                f"anystar segment: error: {out}: cannot write to {folder}: {DENIED}")


def _write_fails_after_the_work(tmp: Path, model: Path, fixtures: dict) -> Case:
    image = tif(tmp / "a.tif", volume(NUCLEI))

    def disk_full(path, *args, **kwargs):  # the temporary file's write runs out of space
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    fixtures["monkeypatch"].setattr(tifffile, "imwrite", disk_full)
    out = tmp / "a_seg.tif"
    return Case(segment([image], out, model), 2,
                f"anystar segment: error: cannot write {out}: No space left on device",
                only_line=False, runs=1)  # after the progress bars


def _corrupt(content: bytes, reason: str) -> Callable[[Path, Path, dict], Case]:
    def row(tmp: Path, model: Path, fixtures: dict) -> Case:
        path = tmp / "scan.tif"
        path.write_bytes(content)
        return Case(segment([path], tmp / "scan_seg.tif", model), 2,
                    re.escape(f"anystar segment: error: cannot read {path}: ") + reason,
                    pattern=True)

    return row


def _truncated_tiff() -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, volume(NUCLEI), photometric="minisblack")
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


def _measure_into_an_unwritable_folder(tmp: Path, model: Path, fixtures: dict) -> Case:
    labels = tif(tmp / "labels.tif", ndimage.label(volume(NUCLEI) > 400)[0].astype(np.uint16))
    folder = fixtures["read_only"](tmp / "tables")
    out = folder / "objects.csv"
    return Case(["measure", str(labels), "--out", str(out)], 2,
                f"anystar measure: error: {out}: cannot write to {folder}: {DENIED}")


def _batch_with_a_corrupt_tiff(tmp: Path, model: Path, fixtures: dict) -> Case:
    good = tif(tmp / "a.tif", volume(NUCLEI))
    corrupt = tmp / "c.tif"
    corrupt.write_bytes(_truncated_tiff())
    out = tmp / "out"
    return Case(segment([good, corrupt], out, model), 1,
                "anystar segment: 1 of 2 volumes segmented; 1 failed: c.tif",
                written=(out / "a_labels.tif",), only_line=False, runs=1)


def _add_corrupt_weights(tmp: Path, model: Path, fixtures: dict) -> Case:
    folder = shutil.copytree(model, tmp / "downloaded")
    (folder / "weights_best.h5").write_bytes(b"\x89HDF\r\n\x1a\n truncated download")
    return Case(["models", "--add", str(folder)], 2,
                re.escape(f"anystar models: error: cannot load the model in {folder}: ")
                + r"[^\n]+", pattern=True)


def _add_weights_of_another_network(tmp: Path, model: Path, fixtures: dict) -> Case:
    folder = shutil.copytree(model, tmp / "edited")
    config = json.loads((folder / "config.json").read_text())
    config["unet_n_filter_base"] *= 2  # the weights no longer fit the configured network
    (folder / "config.json").write_text(json.dumps(config))
    return Case(["models", "--add", str(folder)], 2,
                re.escape(f"anystar models: error: cannot load the model in {folder}: ")
                + r"[^\n]+", pattern=True)


def _killed_before_its_first_checkpoint(tmp: Path, model: Path, fixtures: dict) -> Case:
    staged = user_models_dir() / f".tuned{checkpoint.STAGING_MARK}{_dead_pid()}-x"
    shutil.copytree(model, staged)  # a complete-looking model, still in preparation
    shutil.copytree(model, user_models_dir() / "good")
    return Case(["models"], 0, r"\* +good +user .*", stream="out", only_line=False,
                pattern=True, absent="tuned")


def _unfinished(status: str) -> Callable[[Path, Path, dict], Case]:
    def row(tmp: Path, model: Path, fixtures: dict) -> Case:
        folder = shutil.copytree(model, user_models_dir() / "tuned")
        record = {"status": status, "steps_done": 14, "total_steps": 100}
        (folder / "training.json").write_text(json.dumps(record))
        return Case(["models"], 0, rf"\* +tuned +user .* unfinished training \({status} at "
                    r"step 14 of 100\)", stream="out", only_line=False, pattern=True)

    return row


def _train_cancelled_before_its_first_checkpoint(tmp: Path, model: Path, fixtures: dict) -> Case:
    from napari_anystar.train import loop

    def interrupted(recipe):  # Ctrl-C while the network is being built
        raise KeyboardInterrupt

    fixtures["monkeypatch"].setattr(loop, "build_model", interrupted)
    out = user_models_dir() / "tuned"
    return Case(["train", "--generator", "as-mix", "--config", "tiny", "--steps", "4",
                 "--workers", "0", "--out", str(out)], 130,
                "anystar train: interrupted before the first checkpoint; nothing was saved")


ROWS: dict[str, Callable[[Path, Path, dict], Case]] = {
    "segment --scale auto: a volume with too few objects falls back, with a warning":
        _auto_scale_too_few,
    "segment --out an unwritable folder: refused before any work": _unwritable_out_folder,
    "segment --out a new folder inside an unwritable one: refused before any work":
        _new_folder_in_unwritable_one,
    "segment: unwritable output file: its name, before any work": _unwritable_output_file,
    "segment: the write fails (disk full): the output's name, no temporary file left":
        _write_fails_after_the_work,
    "segment: corrupt .tif (garbage after the header)": _corrupt(
        b"II*\x00garbage", re.escape("no image data in the file (is it corrupt or truncated?)")),
    "segment: truncated .tif": _corrupt(_truncated_tiff(), r"failed to read \d+ bytes, got \d+"),
    "segment: empty .tif": _corrupt(b"", re.escape("not a TIFF file: header=b''")),
    "segment: batch with a corrupt .tif: skipped, the rest written, exit 1":
        _batch_with_a_corrupt_tiff,
    "measure --out a table in an unwritable folder: refused before any work":
        _measure_into_an_unwritable_folder,
    "models --add a folder with corrupt weights_best.h5: nothing remembered":
        _add_corrupt_weights,
    "models --add weights that do not fit the config: nothing remembered":
        _add_weights_of_another_network,
    "models: a run killed before its first checkpoint is not listed":
        _killed_before_its_first_checkpoint,
    "models: a cancelled fine-tune is marked": _unfinished("interrupted"),
    "models: a killed fine-tune (after a checkpoint) is marked": _unfinished("running"),
    "train: cancelled before the first checkpoint: no folder": (
        _train_cancelled_before_its_first_checkpoint),
}


@pytest.mark.parametrize("row", list(ROWS.values()), ids=list(ROWS))
def test_bad_input_row(row, tmp_path, model_dir, capsys, monkeypatch, read_only, runs,
                       blob_sizes, _isolated_user_dirs):
    home = _isolated_user_dirs
    user_models_dir().mkdir(parents=True, exist_ok=True)
    fixtures = {"read_only": read_only, "monkeypatch": monkeypatch}
    user = tmp_path / "user"
    user.mkdir()
    case = row(user, model_dir, fixtures)
    remembered = registry.list_models()
    before = snapshot(user, home)

    code = cli.main(case.argv)
    out, err = capsys.readouterr()

    assert code == case.code, err
    assert "Traceback" not in err
    lines = (err if case.stream == "err" else out).strip().splitlines()
    match = re.fullmatch if case.pattern else str.__eq__
    hits = [line for line in lines if match(case.line, line)]
    assert len(hits) == 1, (case.line, lines)
    if case.only_line:
        assert len(lines) == 1, lines
    assert not case.absent or case.absent not in out + err
    assert len(runs) == case.runs
    after = snapshot(user, home)
    assert {path: after.get(path) for path in before} == before  # nothing changed or removed
    created = {str(p) for p in case.written} | ({str(p.parent) for p in case.written}
                                               - set(before))
    assert sorted(set(after) - set(before)) == sorted(created)
    assert registry.list_models() == remembered
    for path in case.written:
        assert tifffile.imread(path).shape == SHAPE
    if row is _auto_scale_too_few:
        assert runs == [(1.25, 1.25, 1.25), (1.0, 1.0, 1.0)]  # measured; fallen back
        assert ("a.tif: objects ~9.6 x 9.6 x 9.6 voxels (Z, Y, X; 4 found): scale (1.25, "
                "1.25, 1.25).") in err.splitlines()
        assert [line.split("\t")[0] for line in out.splitlines()] == list(map(str, case.written))
