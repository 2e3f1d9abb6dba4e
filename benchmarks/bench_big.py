"""Block-wise segmentation (``model.blockwise``): equivalence, memory, throughput.

* ``equivalence``: a synthetic nuclei volume that fits in RAM, segmented whole (network +
  ``InstanceSolver``, outlines refined or not) and block-wise (default block size and margin,
  the same refinement): the share of whole-volume objects matched at IoU >= 0.9 by a
  block-wise object, ``duplicates`` (extra block-wise objects lying mostly inside one
  whole-volume object) and ``cut`` (whole-volume objects split over two or more block-wise
  labels, each holding >= 10 % of it); ``refined`` and ``stardist`` (not refined).
* ``memory``: peak RSS of ``anystar segment in.zarr --out out.zarr --scale 1 --workers 0``
  (outlines refined) in a fresh process for an on-disk zarr volume and one 4x larger (twice
  along Z and Y).
* ``throughput``: voxels per second (outlines refined) in this process (``workers_0``) and
  on a LocalCluster of 1 and 2 worker processes (started and warmed up first, not timed), and
  the scheduler's overhead per block: (time with 1 worker - time in this process) / blocks.

Volumes: Gaussian-blurred spheres (radius 4.5-7.5, the training size) on noise, uint16.
Usage: python benchmarks/bench_big.py [--equiv-shape Z Y X] [--nuclei N] [--mem-shape Z Y X]
       [--tput-shape Z Y X] [--skip equivalence memory throughput]
Prints one JSON object on the last line. Timings depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def nuclei(shape: tuple[int, int, int], n: int, seed: int = 0) -> np.ndarray:
    """``n`` blurred bright spheres on noise (uint16)."""
    from scipy import ndimage as ndi

    from napari_anystar.synth.labels import spheres_label_map

    rng = np.random.default_rng(seed)
    centres = (rng.uniform(0, 1, (n, 3)) * np.array(shape)).astype(np.float32)
    radii = rng.uniform(4.5, 7.5, n).astype(np.float32)
    truth = spheres_label_map(shape, centres, radii, np.zeros(shape, np.float32), 6.0)
    image = ndi.gaussian_filter((truth > 0).astype(np.float32), 1.0)
    image += rng.normal(0, 0.05, shape).astype(np.float32)
    return (np.clip(image, -0.2, 2) * 1000 + 300).astype(np.uint16)


def write_tiled(path: Path, shape: tuple[int, ...], tile: np.ndarray) -> None:
    """A zarr volume of ``shape`` filled with copies of ``tile`` (written tile by tile)."""
    import zarr

    out = zarr.open_array(str(path), mode="w", shape=shape, chunks=(64, 128, 128),
                          dtype=tile.dtype)
    for z in range(0, shape[0], tile.shape[0]):
        for y in range(0, shape[1], tile.shape[1]):
            for x in range(0, shape[2], tile.shape[2]):
                box = tuple(slice(a, min(a + t, s)) for a, t, s
                            in zip((z, y, x), tile.shape, shape, strict=True))
                out[box] = tile[tuple(slice(0, b.stop - b.start) for b in box)]


def compare(whole: np.ndarray, blocks: np.ndarray) -> dict:
    """Matched (IoU >= 0.9), duplicated and cut objects of ``blocks`` against ``whole``."""
    from scipy import ndimage as ndi

    n_whole = int(whole.max())
    matched = duplicates = cut = 0
    slices = ndi.find_objects(whole)
    block_sizes = np.bincount(blocks.ravel())
    for i, box in enumerate(slices, start=1):
        if box is None:
            continue
        mask = whole[box] == i
        ids, counts = np.unique(blocks[box][mask], return_counts=True)
        counts, ids = counts[ids > 0], ids[ids > 0]
        if not len(ids):
            continue
        best = ids[np.argmax(counts)]
        union = mask.sum() + block_sizes[best] - counts.max()
        matched += counts.max() / union >= 0.9
        cut += int(np.count_nonzero(counts >= 0.1 * mask.sum()) >= 2)
        duplicates += max(0, int(np.count_nonzero(counts > 0.5 * block_sizes[ids])) - 1)
    return {"whole_objects": n_whole, "block_objects": int(len(np.unique(blocks)) - 1),
            "matched_iou_0.9": int(matched),
            "matched_pct": round(100.0 * matched / max(1, n_whole), 2),
            "duplicates": duplicates, "cut": cut}


def equivalence(entry, shape, n) -> dict:
    import zarr

    from napari_anystar._generators import result_of
    from napari_anystar.model.blockwise import segment_blocks
    from napari_anystar.model.instances import InstanceSolver
    from napari_anystar.model.object_size import training_diameter
    from napari_anystar.model.predict import PredictSettings, predict_network
    from napari_anystar.model.refine import OutlineRefiner
    from napari_anystar.model.registry import load_model, model_thresholds

    model = load_model(entry)
    prob, nms = model_thresholds(entry)
    image = nuclei(shape, n)
    settings = PredictSettings(norm=model.anystar_normalization)
    start = time.perf_counter()
    whole = InstanceSolver(result_of(predict_network(model, image, settings)), model)
    references = {"stardist": whole.labels(prob, nms)}
    whole_s = time.perf_counter() - start
    start = time.perf_counter()
    references["refined"] = OutlineRefiner.at_scale(image, settings.scale,
                                                    training_diameter(model))(
        references["stardist"])
    out: dict = {"shape": list(shape), "nuclei_placed": n, "whole_s": round(whole_s, 1),
                 "whole_refine_s": round(time.perf_counter() - start, 1)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, reference in references.items():
            start = time.perf_counter()
            result = result_of(segment_blocks(entry, image, Path(tmp) / f"{name}.zarr",
                                              settings, (prob, nms), refine=name == "refined"))
            blocks_s = time.perf_counter() - start
            labels = zarr.open(str(Path(tmp) / f"{name}.zarr"), mode="r")[:]
            out[name] = {**compare(reference, labels), "blockwise_s": round(blocks_s, 1)}
    return {**out, "blocks": result.n_blocks, "block_size": list(result.grid.core),
            "margin": list(result.grid.margin)}


CHILD = ("import resource, sys; from napari_anystar import cli; code = cli.main(sys.argv[1:]); "
         "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); "
         "sys.exit(code)")


def peak_rss(volume: Path, out: Path, model: str) -> dict:
    """Peak RSS (MB) of a fresh ``anystar segment`` process on ``volume``."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, "segment", str(volume), "--out",
                           str(out), "--scale", "1", "--workers", "0", "--model", model],
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"segment failed: {proc.stderr.strip().splitlines()[-1]}")
    kb = int(next(line for line in proc.stdout.splitlines() if line.startswith("MAXRSS"))
             .split()[1])
    return {"peak_rss_mb": round(kb / 1024, 1), "seconds": round(seconds, 1)}


def memory(entry, shape) -> dict:
    large = (2 * shape[0], 2 * shape[1], shape[2])
    tile = nuclei((min(shape[0], 128), min(shape[1], 256), min(shape[2], 256)), 300, seed=1)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, size in (("small", shape), ("large", large)):
            volume = Path(tmp) / f"{name}.zarr"
            write_tiled(volume, size, tile)
            out[name] = {"shape": list(size), **peak_rss(volume, Path(tmp) / f"{name}_l.zarr",
                                                         str(entry.path))}
    out["large_over_small"] = round(out["large"]["peak_rss_mb"] / out["small"]["peak_rss_mb"],
                                    3)
    return out


def throughput(entry, shape) -> dict:
    from napari_anystar._generators import result_of
    from napari_anystar.model.block_exec import block_executor
    from napari_anystar.model.blockwise import segment_blocks
    from napari_anystar.model.predict import PredictSettings
    from napari_anystar.model.registry import model_thresholds

    image = nuclei(shape, int(np.prod(shape) / 20000), seed=2)
    warm = image[:32, :64, :64]  # four blocks of 32: every worker loads the model
    thresholds = model_thresholds(entry)
    settings = PredictSettings(scale=(1.0, 1.0, 1.0))
    out: dict = {"shape": list(shape)}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (0, 1, 2):
            with block_executor(workers) as executor:
                result_of(segment_blocks(entry, warm, Path(tmp) / f"w{workers}.zarr", settings,
                                         thresholds, (32, 32, 32), executor=executor))
                start = time.perf_counter()
                result = result_of(segment_blocks(entry, image, Path(tmp) / f"{workers}.zarr",
                                                  settings, thresholds, executor=executor))
                seconds = time.perf_counter() - start
            out[f"workers_{workers}"] = {"seconds": round(seconds, 1),
                                         "voxels_per_s": round(image.size / seconds)}
        out["blocks"] = result.n_blocks
    overhead = (out["workers_1"]["seconds"] - out["workers_0"]["seconds"]) / out["blocks"]
    out["scheduler_overhead_s_per_block"] = round(overhead, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model name or folder (default: the default)")
    ap.add_argument("--equiv-shape", type=int, nargs=3, default=(128, 384, 384))
    ap.add_argument("--nuclei", type=int, default=1000, help="nuclei placed (equivalence)")
    ap.add_argument("--mem-shape", type=int, nargs=3, default=(128, 512, 512),
                    help="the smaller memory volume (the larger: twice along Z and Y)")
    ap.add_argument("--tput-shape", type=int, nargs=3, default=(128, 256, 256))
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["equivalence", "memory", "throughput"])
    args = ap.parse_args(argv)

    from napari_anystar.model.registry import default_model, resolve_model

    entry = resolve_model(args.model) if args.model else default_model()
    report: dict = {"model": entry.name, "cpus": os.cpu_count(),
                    "load_avg_1min_at_start": round(os.getloadavg()[0], 2)}
    if "equivalence" not in args.skip:
        report["equivalence"] = equivalence(entry, tuple(args.equiv_shape), args.nuclei)
        print(json.dumps(report["equivalence"]), file=sys.stderr)
    if "memory" not in args.skip:
        report["memory"] = memory(entry, tuple(args.mem_shape))
        print(json.dumps(report["memory"]), file=sys.stderr)
    if "throughput" not in args.skip:
        report["throughput"] = throughput(entry, tuple(args.tput_shape))
    report["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
