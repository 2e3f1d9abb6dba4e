"""How sure a pooled score is: bootstrap over volumes.

A folder of 22 volumes is a sample of the volumes users bring. Resampling its volumes with
replacement (counts pooled as in :func:`~napari_anystar.analysis.pooled_scores`) gives an
interval for its mean accuracy, and, for two methods scored on the same volumes, an interval
for their difference (paired: each resample takes the same volumes for both). A difference
whose interval holds 0 does not rank the two methods.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: resamples drawn for an interval
N_RESAMPLES = 2000
#: two-sided coverage of an interval
LEVEL = 0.95


def mean_accuracy(counts: np.ndarray) -> np.ndarray:
    """Pooled mean accuracy: counts ``(..., volumes, thresholds, 3)`` are summed over the
    volumes, giving ``(...)``; a threshold with no objects at all scores 0."""
    tp, fp, fn = np.moveaxis(counts.sum(axis=-3), -1, 0)
    total = tp + fp + fn
    acc = np.divide(tp, total, out=np.zeros(total.shape), where=total > 0)
    return acc.mean(axis=-1)


def _resampled(n_volumes: int, n_resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_volumes, (n_resamples, n_volumes))


@dataclass(frozen=True)
class Interval:
    """A score (or difference) and its bootstrap interval."""

    value: float
    low: float
    high: float

    @classmethod
    def of(cls, value: float, draws: np.ndarray, level: float) -> Interval:
        """``value`` with the central ``level`` percentile interval of ``draws``."""
        tail = 50 * (1 - level)
        low, high = np.percentile(draws, [tail, 100 - tail])
        return cls(float(value), float(low), float(high))

    def to_dict(self) -> dict[str, float]:
        return {"value": round(self.value, 4), "low": round(self.low, 4),
                "high": round(self.high, 4)}


def accuracy_interval(counts: np.ndarray, *, n_resamples: int = N_RESAMPLES,
                      level: float = LEVEL, seed: int = 0) -> Interval:
    """Pooled mean accuracy of ``counts`` (from :func:`match_counts`) and its percentile
    bootstrap interval over volumes."""
    draws = mean_accuracy(counts[_resampled(len(counts), n_resamples, seed)])
    return Interval.of(mean_accuracy(counts), draws, level)


def paired_difference(counts_a: np.ndarray, counts_b: np.ndarray, *,
                      n_resamples: int = N_RESAMPLES, level: float = LEVEL,
                      seed: int = 0) -> Interval:
    """Mean accuracy of A minus that of B on the same volumes, with a paired bootstrap
    interval (each resample takes the same volumes for both)."""
    if counts_a.shape != counts_b.shape:
        raise ValueError(f"need counts of the same volumes and thresholds, got "
                         f"{counts_a.shape} and {counts_b.shape}")
    idx = _resampled(len(counts_a), n_resamples, seed)
    draws = mean_accuracy(counts_a[idx]) - mean_accuracy(counts_b[idx])
    return Interval.of(mean_accuracy(counts_a) - mean_accuracy(counts_b), draws, level)
