"""``anystar synth``: writes readable pairs, refuses to overwrite, one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_anystar import cli


@pytest.fixture(autouse=True)
def _only_synth(monkeypatch):
    """Dispatch through the real ``anystar`` parser, with just this sub-command registered."""
    monkeypatch.setattr(cli, "SUBCOMMANDS", ("synth",))


def _run(capsys, *args):
    code = cli.main(["synth", *args])
    return code, capsys.readouterr()


def test_cli_writes_pairs(tmp_path, capsys):
    out = tmp_path / "data"
    code, captured = _run(capsys, "--generator", "as-randfg-plainbg", "--n", "2", "--seed", "3",
                          "--out", str(out), "--size", "16")
    assert code == 0, captured.err
    for i in range(2):
        image = tifffile.imread(out / f"{i:05d}_image.tif")
        labels = tifffile.imread(out / f"{i:05d}_labels.tif")
        assert image.shape == labels.shape == (16, 16, 16)
        assert image.dtype == np.float32 and labels.dtype == np.uint16
        assert image.min() >= 0 and image.max() <= 1 and labels.max() >= 1
    assert "2/2" in captured.err  # tqdm progress on stderr


def test_cli_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "data"
    out.mkdir()
    (out / "00000_image.tif").write_bytes(b"keep me")
    code, captured = _run(capsys, "--n", "1", "--out", str(out), "--size", "16")
    assert code == 2
    assert "--overwrite" in captured.err and "Traceback" not in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert (out / "00000_image.tif").read_bytes() == b"keep me"
    code, captured = _run(capsys, "--n", "1", "--out", str(out), "--size", "16", "--overwrite")
    assert code == 0
    assert tifffile.imread(out / "00000_image.tif").shape == (16, 16, 16)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--generator", "as-bogus"], "unknown generator"),
        (["--size", "8"], "output size"),
        (["--size", "500"], "output size"),
        (["--n", "0"], "positive"),
    ],
)
def test_cli_user_errors_are_one_line(tmp_path, capsys, args, words):
    base = {"--n": "1", "--out": str(tmp_path / "o"), "--size": "16"}
    for key, value in zip(args[::2], args[1::2], strict=True):
        base[key] = value
    flat = [item for pair in base.items() for item in pair]
    if "--generator" in args:
        flat += ["--generator", args[1]]
    code, captured = _run(capsys, *flat)
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and lines[0].startswith("anystar synth: error")


def test_cli_unwritable_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, captured = _run(capsys, "--n", "1", "--out", str(blocker / "sub"), "--size", "16")
    assert code == 2
    assert len(captured.err.strip().splitlines()) == 1
    assert "cannot create output folder" in captured.err
