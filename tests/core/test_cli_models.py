"""``anystar models``: listing, adding a folder, and its user errors."""

from __future__ import annotations

import hashlib
import json
import shutil

from napari_anystar import cli
from napari_anystar._paths import user_models_dir
from napari_anystar.model import model_settings, registry


def test_empty_list_explains_how_to_get_a_model(capsys):
    assert cli.main(["models"]) == 0
    assert capsys.readouterr().out.strip() == registry.NO_MODELS_MESSAGE


def test_add_then_list(tiny_model_dir, tmp_path, capsys):
    picked = shutil.copytree(tiny_model_dir, tmp_path / "picked")
    (picked / "thresholds.json").write_text(json.dumps({"prob": 0.61, "nms": 0.27}))
    shutil.copytree(tiny_model_dir, user_models_dir() / "trained")

    assert cli.main(["models", "--add", str(picked)]) == 0
    assert capsys.readouterr().out.strip() == f"added picked (folder): {picked.resolve()}"

    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["NAME", "SOURCE", "PROB", "NMS", "NORMALISATION", "PATH", "NOTE"]
    assert lines[1].split() == ["*", "trained", "user", "0.5", "0.4", "percentiles", "1-99.8",
                                str((user_models_dir() / "trained").resolve())]  # fmt: skip
    assert lines[2].split() == ["picked", "folder", "0.61", "0.27", "percentiles", "1-99.8",
                                str(picked.resolve())]  # fmt: skip


def test_the_papers_model_is_listed_as_such(tiny_model_dir, tmp_path, capsys, monkeypatch):
    paper = shutil.copytree(tiny_model_dir, tmp_path / "anystar-mix")
    for name, attr in (("config.json", "PAPER_CONFIG_SHA256"),
                       ("weights_best.h5", "PAPER_WEIGHTS_SHA256")):
        digest = hashlib.sha256((paper / name).read_bytes()).hexdigest()
        monkeypatch.setattr(model_settings, attr, digest)
    registry.remember_model_folder(paper)
    assert cli.main(["models"]) == 0
    row = capsys.readouterr().out.strip().splitlines()[1]
    assert row.split()[:6] == ["*", "anystar-mix", "folder", "0.5", "0.4", "percentiles"]
    assert row.endswith(f"0-99.9, clipped  {paper.resolve()}  AnyStar-mix (paper weights)")


def test_user_errors_exit_2_with_one_line(tiny_model_dir, tmp_path, capsys):
    broken = shutil.copytree(tiny_model_dir, tmp_path / "broken")
    (broken / "config.json").write_text("{oops")
    corrupt = shutil.copytree(tiny_model_dir, tmp_path / "corrupt")
    (corrupt / "weights_best.h5").write_bytes(b"not an hdf5 file")
    mismatched = shutil.copytree(tiny_model_dir, tmp_path / "mismatched")
    config = json.loads((mismatched / "config.json").read_text())
    filters = config["unet_n_filter_base"] * 2  # a wider network than the weights
    (mismatched / "config.json").write_text(json.dumps({**config, "unet_n_filter_base": filters}))
    for argv, expected in [
        (["models", "--add", str(broken)], "not valid JSON"),
        (["models", "--add", str(corrupt)], "cannot load the model"),  # checked when added
        (["models", "--add", str(mismatched)], "cannot load the model"),  # weights do not fit
        (["models", "--add", str(tmp_path / "missing")], "is not a folder"),
        (["models", "--sha256", "0" * 64], "go with --fetch"),
    ]:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert err[0].startswith("anystar models: error: ")
        assert expected in err[0]
    assert registry.list_models() == []
