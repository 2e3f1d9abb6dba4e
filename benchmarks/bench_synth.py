"""Benchmark of the AnyStar synthetic data generator; prints one JSON object on its last line.

Measures, on this machine:
- ``fresh_sample_median_s``: per generator, median wall seconds of one fresh sample
  (new label map + appearance + A(.), the MONAI pipeline; 128^3 synthesis grid, 64^3 output),
  in-process;
  ``fresh_sample_cpu_median_s`` the same in CPU seconds of this process (robust to a busy,
  shared machine); ``as_mix_stage_median_s`` splits AS-Mix into label map / g(L) / A(.).
- ``augment_pipeline_build_s``: importing ``monai.transforms`` and building the A(.) Compose,
  paid once per process (each CLI worker pays it).
- ``cli_samples_per_s``: ``anystar synth --n N --workers 2`` run as a subprocess, wall clock
  including interpreter start-up and imports (``cli_method`` says what was run).
  ``cli_cpu_s`` is the CPU time of the CLI and its workers; ``cli_samples_per_s_cpu_bound`` =
  n / (cpu / workers), the rate an idle machine with ``workers`` free cores would allow.
- ``peak_rss_mb``: peak resident memory of this (generator) process, ``ru_maxrss``;
  ``cli_peak_rss_mb`` the largest CLI process (parent or worker).

Usage: ``python benchmarks/bench_synth.py [--samples 7] [--cli-n 40]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _fresh_samples(generator: str, n: int) -> tuple[list[float], list[float]]:
    from napari_anystar.synth import generate

    walls, cpus = [], []
    for seed in range(1000, 1000 + n):
        wall, cpu = time.perf_counter(), time.process_time()
        generate(generator, seed)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return walls, cpus


def _stages(n: int) -> dict[str, float]:
    """Median seconds of the three stages of AS-Mix samples (same code path as generate)."""
    import torch

    from napari_anystar.synth.appearance import synth_image
    from napari_anystar.synth.augment import augment
    from napari_anystar.synth.generators import SynthSettings
    from napari_anystar.synth.labels import synth_label_map

    settings = SynthSettings()
    times: dict[str, list[float]] = {"label_map": [], "clean_image": [], "augment": []}
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for seed in range(n):
            rng = np.random.default_rng(seed)
            t0 = time.perf_counter()
            labels = synth_label_map(rng, settings.grid_size, settings.mean_radius,
                                     settings.pad_choices)
            t1 = time.perf_counter()
            image = synth_image(rng, labels, ("plain", "rand", "perlin")[seed % 3])
            t2 = time.perf_counter()
            augment(rng, image, labels, settings.size)
            t3 = time.perf_counter()
            times["label_map"].append(t1 - t0)
            times["clean_image"].append(t2 - t1)
            times["augment"].append(t3 - t2)
    finally:
        torch.set_num_threads(previous)
    return {key: round(statistics.median(vals), 4) for key, vals in times.items()}


def _cli(n: int, workers: int) -> dict[str, object]:
    out = Path(tempfile.mkdtemp(prefix="bench-synth-"))
    exe = shutil.which("anystar")
    command = ([exe] if exe else [sys.executable, "-m", "napari_anystar.cli"]) + [
        "synth", "--generator", "as-mix", "--n", str(n), "--seed", "0", "--out", str(out),
        "--workers", str(workers),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        written = len(list(out.glob("*_labels.tif")))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    result: dict[str, object] = {
        "cli_method": f"subprocess `anystar synth --n {n} --workers {workers}` "
                      "(wall clock incl. start-up)",
        "cli_returncode": done.returncode,
    }
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if done.returncode == 0 and written == n:
        result["cli_samples_per_s"] = round(n / elapsed, 3)
        result["cli_wall_s"] = round(elapsed, 2)
        # CPU seconds of the CLI and its workers, start-up included: on an otherwise idle
        # machine with ``workers`` cores the run cannot take less than cpu / workers
        result["cli_cpu_s"] = round(cpu, 2)
        result["cli_samples_per_s_cpu_bound"] = round(n / (cpu / workers), 3)
    else:
        result["cli_samples_per_s"] = None
        result["cli_error"] = done.stderr.strip().splitlines()[-1:] if done.stderr else []
    result["cli_peak_rss_mb"] = round(
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=7, help="fresh samples per generator")
    parser.add_argument("--cli-n", type=int, default=40, help="samples for the CLI run")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from napari_anystar.synth import GENERATOR_NAMES, generate
    from napari_anystar.synth.augment import build_pipeline

    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    build_pipeline(64)
    build_s = time.perf_counter() - start
    generate("as-mix", 0)  # warm-up: imports, first-call allocations
    medians, cpu_medians = {}, {}
    for name in GENERATOR_NAMES:
        walls, cpus = _fresh_samples(name, args.samples)
        medians[name] = round(statistics.median(walls), 4)
        cpu_medians[name] = round(statistics.median(cpus), 4)
    stages = _stages(args.samples)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cli = _cli(args.cli_n, args.workers)
    result = {
        "fresh_sample_median_s": medians,
        "fresh_sample_cpu_median_s": cpu_medians,
        "as_mix_stage_median_s": stages,
        "augment_pipeline_build_s": round(build_s, 3),
        "samples_per_generator": args.samples,
        **cli,
        "peak_rss_mb": round(peak, 1),
        "cpu_count": os.cpu_count(),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "targets": {"fresh_as_mix_s": 0.5, "peak_rss_mb": 1024, "cli_samples_per_s": 3},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
