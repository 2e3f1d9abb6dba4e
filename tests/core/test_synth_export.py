"""export_samples: files, determinism across worker counts, validation before any work."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import tifffile

from napari_anystar.synth import SynthSettings, export_samples, generate, sample_seed

TINY = SynthSettings(size=16, grid_size=32, mean_radius=4.0, pad_choices=(0, 8))


def _read_pairs(folder, n):
    return [
        (
            tifffile.imread(folder / f"{i:05d}_image.tif"),
            tifffile.imread(folder / f"{i:05d}_labels.tif"),
        )
        for i in range(n)
    ]


def test_export_writes_pairs_matching_generate(tmp_path):
    progress = list(export_samples("as-mix", 3, 9, tmp_path / "out", TINY))
    assert progress == [1, 2, 3]
    pairs = _read_pairs(tmp_path / "out", 3)
    for i, (image, labels) in enumerate(pairs):
        assert image.dtype == np.float32 and labels.dtype == np.uint16
        assert image.shape == labels.shape == (16, 16, 16)
        expected = generate("as-mix", sample_seed(9, i), TINY)
        np.testing.assert_array_equal(image, expected.image)
        np.testing.assert_array_equal(labels, expected.labels)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [f"{i:05d}_{kind}.tif" for i in range(3) for kind in ("image", "labels")]


def test_export_same_files_with_two_workers(tmp_path):
    list(export_samples("as-randfg-perlinbg", 3, 4, tmp_path / "one", TINY, workers=1))
    list(export_samples("as-randfg-perlinbg", 3, 4, tmp_path / "two", TINY, workers=2))
    for (img1, lab1), (img2, lab2) in zip(
        _read_pairs(tmp_path / "one", 3), _read_pairs(tmp_path / "two", 3), strict=True
    ):
        np.testing.assert_array_equal(img1, img2)
        np.testing.assert_array_equal(lab1, lab2)


def test_export_refuses_to_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "00001_labels.tif").write_bytes(b"user data")
    with pytest.raises(FileExistsError, match=r"00001_labels\.tif"):
        export_samples("as-mix", 2, 0, out, TINY)
    assert (out / "00001_labels.tif").read_bytes() == b"user data"
    assert not (out / "00000_image.tif").exists()  # nothing written before the check
    assert list(export_samples("as-mix", 2, 0, out, TINY, overwrite=True)) == [1, 2]
    assert tifffile.imread(out / "00001_labels.tif").shape == (16, 16, 16)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"generator": "nope"}, "unknown generator"),
        ({"n": 0}, "positive"),
        ({"workers": 0}, "workers"),
        ({"settings": SynthSettings(size=4)}, "output size"),
    ],
)
def test_export_validates_before_working(tmp_path, kwargs, words):
    args = {"generator": "as-mix", "n": 2, "seed": 0, "out_dir": tmp_path / "o", "settings": TINY}
    args.update(kwargs)
    with pytest.raises(ValueError, match=words):
        export_samples(**args)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_export_unusable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        export_samples("as-mix", 1, 0, blocker, TINY)
    if sys.platform != "win32" and os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ValueError, match="not writable"):
            export_samples("as-mix", 1, 0, locked, TINY)


def test_closing_the_iterator_stops(tmp_path):
    steps = export_samples("as-mix", 5, 0, tmp_path, TINY)
    assert next(steps) == 1
    steps.close()
    assert len(list(tmp_path.glob("*_image.tif"))) == 1
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind
