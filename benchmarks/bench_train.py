"""Benchmark of training steps; prints one JSON object on its last line.

Runs :func:`napari_anystar.train.train` (the real loop) with a named configuration on
AS-Mix samples from the synthetic pool (generated up front by worker processes, refreshed
every ``--pool-refresh`` steps as in a real run) and measures, after ``--warmup`` steps:
- ``lite_step_s`` (or ``<config>_step_s``): median wall seconds per training step
  (batch from the pool incl. flips/permutations and StarDist targets + one optimiser step);
  ``step_s_mean`` the mean; ``step_cpu_s`` median CPU seconds of this process per step
  (all its threads; less sensitive to other jobs on a shared machine);
- ``data_wait_fraction``: share of step time the loop waited for its batch (target < 0.10);
- ``sample_generation_s``: wall seconds per synthetic sample while filling the pool;
- ``load_average``: 1-minute load average before and after (the machine may be shared).

Usage: ``python benchmarks/bench_train.py [--config lite] [--steps 30] [--warmup 5]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="lite")
    parser.add_argument("--steps", type=int, default=30, help="measured steps")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--pool-size", type=int, default=8)
    parser.add_argument("--pool-refresh", type=int, default=None,
                        help="default: the configuration's")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    from napari_anystar.train import TrainSettings, train
    from napari_anystar.train.configs import get_config

    cfg = get_config(args.config)
    load_before = os.getloadavg()[0]
    total = args.warmup + args.steps
    with tempfile.TemporaryDirectory() as tmp:
        settings = TrainSettings(
            out_dir=Path(tmp) / "model", config=args.config, generator="as-mix",
            steps=total, steps_per_epoch=total, pool_size=args.pool_size,
            pool_refresh=args.pool_refresh, val_samples=1, workers=args.workers,
            optimize_thresholds=False, seed=0,
        )
        step_times, waits, cpu_times = [], [], []
        prepare_start = prepare_end = None
        n_samples = 0
        last, last_cpu = time.perf_counter(), time.process_time()
        for event in train(settings):
            now = time.perf_counter()
            if event.kind == "prepare":
                prepare_start = prepare_start or now
                prepare_end, n_samples = now, event.done
            elif event.kind == "step" and event.step > args.warmup:
                step_times.append(now - last)
                cpu_times.append(time.process_time() - last_cpu)
                waits.append(event.wait_s)
            last, last_cpu = time.perf_counter(), time.process_time()
    total_time = sum(step_times)
    result = {
        f"{args.config}_step_s": statistics.median(step_times),
        "step_s_mean": total_time / len(step_times),
        "step_cpu_s": statistics.median(cpu_times),
        "data_wait_fraction": sum(waits) / total_time,
        "measured_steps": len(step_times),
        "warmup_steps": args.warmup,
        "sample_generation_s": (prepare_end - prepare_start) / max(n_samples, 1),
        "pool_size": args.pool_size,
        "pool_refresh": cfg.pool_refresh if args.pool_refresh is None else args.pool_refresh,
        "workers": args.workers,
        "config": {
            "name": cfg.name, "unet_n_depth": cfg.unet_n_depth,
            "unet_n_filter_base": cfg.unet_n_filter_base, "n_rays": cfg.n_rays,
            "grid": cfg.grid, "net_conv_after_unet": cfg.net_conv_after_unet,
            "patch_size": cfg.patch_size, "batch_size": cfg.batch_size,
            "unet_batch_norm": cfg.unet_batch_norm,
        },
        "projected_default_run_h": statistics.median(step_times) * cfg.steps / 3600,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result), file=sys.stdout)


if __name__ == "__main__":
    main()
