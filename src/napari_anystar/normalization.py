"""The one intensity normalisation of training, threshold tuning, fine-tuning and prediction.

A :class:`Normalization` maps the ``low`` percentile of a volume to 0 and the ``high``
percentile to 1, optionally clipping to [0, 1]. :data:`ANYSTAR` is what every model trained
by this package uses (and records in its ``anystar.json``): the AnyStar reference's "clip at
the 99.9th percentile, then min-max", which keeps a few saturated voxels of a real volume
from squeezing the nuclei into the dark end, and is the identity on the [0, 1] min-max images
of synthetic training data. It measured better than percentiles 1-99.8 on clean synthetic
and on real volumes with the same network (issue 11). :data:`LEGACY` is this package's earlier
prediction default, kept for model folders that record no normalisation (the user models of
earlier versions), so they keep segmenting as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Normalization:
    """Percentile normalisation: ``low`` -> 0, ``high`` -> 1, then clipped to [0, 1] if ``clip``."""

    low: float
    high: float
    clip: bool

    def validate(self) -> None:
        if not (0.0 <= self.low < self.high <= 100.0):
            raise ValueError(
                "Normalisation percentiles must satisfy 0 <= low < high <= 100, "
                f"got ({self.low:g}, {self.high:g})."
            )

    def bounds(self, image: np.ndarray) -> tuple[float, float]:
        """The intensities that map to 0 and 1."""
        lo, hi = np.percentile(np.asarray(image, dtype=np.float32), (self.low, self.high))
        return float(lo), float(hi)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """The normalised volume (float32)."""
        x = np.asarray(image, dtype=np.float32)
        lo, hi = self.bounds(x)
        out = (x - np.float32(lo)) / np.float32(max(hi - lo, 1e-12))
        if self.clip:
            np.clip(out, 0.0, 1.0, out=out)
        return out.astype(np.float32, copy=False)

    def csbdeep(self):
        """The csbdeep normaliser that StarDist's ``predict`` applies identically."""
        from csbdeep.data import PercentileNormalizer

        return PercentileNormalizer(float(self.low), float(self.high), clip=bool(self.clip))

    def to_json(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "clip": self.clip}

    @classmethod
    def from_json(cls, data: Any) -> Normalization:
        """From ``{"low", "high", "clip"}``; ValueError (one line) if malformed."""
        try:
            norm = cls(float(data["low"]), float(data["high"]), bool(data.get("clip", False)))
        except (TypeError, KeyError, ValueError):
            raise ValueError(
                f"normalization must be {{'low': number, 'high': number, 'clip': bool}}, "
                f"got {data!r}"
            ) from None
        norm.validate()
        return norm

    def describe(self) -> str:
        clip = ", clipped" if self.clip else ""
        return f"percentiles {self.low:g}-{self.high:g}{clip}"


#: Models trained by this package, and the AnyStar reference (clip at p99.9, then min-max).
ANYSTAR = Normalization(0.0, 99.9, clip=True)
#: Model folders without a recorded normalisation (earlier versions' prediction default).
LEGACY = Normalization(1.0, 99.8, clip=False)
