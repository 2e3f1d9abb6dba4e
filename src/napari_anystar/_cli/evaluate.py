"""``anystar evaluate``: score predicted label volumes against ground truth (paper protocol).

Each PRED and TRUTH argument is a volume file or a folder; a folder stands for its supported
volume files sorted by name. The two expanded lists are paired in order (the n-th prediction
with the n-th ground truth), so their counts must match; the table names both files of each
pair. Scores are ``stardist.matching`` at IoU 0.1 ... 0.9, per volume and pooled over all
volumes (true/false positives and false negatives summed before the ratios are taken).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from napari_anystar._cli.common import UserError
from napari_anystar.analysis.evaluate import DEFAULT_REGION, REGIONS, REPORT_IOU

__all__ = ["expand_volumes", "register", "run"]

_COLUMNS = {"accuracy": "acc", "precision": "prec", "recall": "rec", "f1": "f1"}


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``evaluate`` sub-command."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score predicted labels against ground truth (accuracy, precision, recall, F1)",
        description=(
            "Score predicted label volumes against ground-truth ones with stardist.matching at "
            "IoU 0.1-0.9 (the AnyStar paper's protocol), per volume and pooled. Folders stand "
            "for their .tif/.tiff/.nii/.nii.gz files sorted by name; predictions and ground "
            "truths are paired in that order."
        ),
    )
    parser.add_argument("preds", nargs="+", metavar="PRED", help="predicted labels: files/folders")
    parser.add_argument("--truth", nargs="+", required=True, metavar="TRUTH",
                        help="ground-truth labels: files/folders, as many volumes as PRED")
    parser.add_argument(
        "--region", choices=REGIONS, default=DEFAULT_REGION,
        help="'annotated': only objects whose centroid lies in the bounding box of the ground "
        "truth's labelled voxels (for partly annotated volumes) "
        f"(default: {DEFAULT_REGION})",
    )
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object with per-volume and pooled scores")
    return parser


def expand_volumes(arguments: list[str], what: str) -> list[Path]:
    """Files named, and each folder's supported volume files sorted by name (hidden skipped)."""
    from napari_anystar.volume_io import volume_format

    def supported(path: Path) -> bool:
        try:
            volume_format(path)
        except ValueError:
            return False
        return path.is_file() and not path.name.startswith(".")

    paths: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = sorted((p for p in path.iterdir() if supported(p)), key=lambda p: p.name)
            if not found:
                raise UserError(f"{what} folder {path} holds no .tif/.tiff/.nii/.nii.gz volumes")
            paths.extend(found)
        elif not path.exists():
            raise UserError(f"{what} {path} does not exist")
        else:
            try:
                volume_format(path)
            except ValueError as err:
                raise UserError(str(err)) from None
            paths.append(path)
    return paths


def _read(path: Path) -> Any:
    from napari_anystar.volume_io import read_volume

    try:
        return read_volume(path)[0]
    except Exception as err:
        reason = (str(err).strip() or type(err).__name__).splitlines()[0]
        raise UserError(f"cannot read {path}: {reason}") from None


def _headline(scores: Any) -> str:
    index = scores.iou_thresholds.index(REPORT_IOU)
    cells = [f"{getattr(scores, metric)[index]:>9.3f}" for metric in _COLUMNS]
    return " ".join([f"{scores.n_true:>6} {scores.n_pred:>6}", *cells,
                     f"{scores.mean('accuracy'):>9.3f}"])


def _print_table(rows: list[dict[str, Any]], pooled: Any) -> None:
    width = max(len("pooled"), *(len(row["prediction"]) for row in rows))
    twidth = max(len("truth"), *(len(row["truth"]) for row in rows))
    metrics = " ".join(f"{f'{short}@{REPORT_IOU:g}':>9}" for short in _COLUMNS.values())
    print(f"{'prediction':<{width}}  {'truth':<{twidth}}  {'n_true':>6} {'n_pred':>6} "
          f"{metrics} {'mean_acc':>9}")
    for row in rows:
        print(f"{row['prediction']:<{width}}  {row['truth']:<{twidth}}  {_headline(row['scores'])}")
    print(f"{'pooled':<{width}}  {'':<{twidth}}  {_headline(pooled)}")


def run(args: argparse.Namespace) -> int:
    """Read each pair, score it, print the table (or JSON); UserError on bad input."""
    import numpy as np

    from napari_anystar.analysis.evaluate import check_pair, restrict_pair
    from napari_anystar.analysis.scores import pooled_scores

    preds = expand_volumes(args.preds, "prediction")
    truths = expand_volumes(args.truth, "ground truth")
    if len(preds) != len(truths):
        raise UserError(f"{len(preds)} prediction volume(s) but {len(truths)} ground-truth "
                        "volume(s); they are paired in order, so the counts must match")
    rows: list[dict[str, Any]] = []
    kept_truth, kept_pred = [], []
    for pred_path, truth_path in zip(preds, truths, strict=True):
        try:
            truth, pred = check_pair(_read(truth_path), _read(pred_path), str(truth_path),
                                     str(pred_path))
            pair = restrict_pair(truth, pred, args.region)
        except ValueError as err:
            raise UserError(f"{pred_path} vs {truth_path}: {err}") from None
        kept_truth.append(pair.truth)
        kept_pred.append(pair.pred)
        rows.append({"prediction": str(pred_path), "truth": str(truth_path),
                     "scores": pooled_scores([pair.truth], [pair.pred]),
                     "ignored_true": pair.ignored_true, "ignored_pred": pair.ignored_pred})
    if not any(np.any(t) for t in kept_truth):
        where = " inside the annotated region" if args.region != "whole" else ""
        raise UserError(f"the ground truth has no labelled objects{where}; nothing to score")
    pooled = pooled_scores(kept_truth, kept_pred)
    if args.json:
        volumes = [{**{k: v for k, v in row.items() if k != "scores"}, **row["scores"].to_dict()}
                   for row in rows]
        print(json.dumps({"region": args.region, "volumes": volumes,
                          "pooled": pooled.to_dict()}, indent=1))
        return 0
    _print_table(rows, pooled)
    print(f"scores at IoU {REPORT_IOU:g}; mean_acc: accuracy averaged over IoU "
          f"{pooled.iou_thresholds[0]:g}-{pooled.iou_thresholds[-1]:g}; region: {args.region}")
    return 0
