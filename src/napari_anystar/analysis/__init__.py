"""Evaluation against reference labels: matching scores, a classical baseline, tuning."""

from .scores import IOU_THRESHOLDS, METRICS, MatchScores, pooled_scores
from .tuning import ThresholdChoice, tune_thresholds_on_outputs
from .voronoi_otsu import VoronoiOtsuSettings, voronoi_otsu_labels

__all__ = [
    "IOU_THRESHOLDS",
    "METRICS",
    "MatchScores",
    "ThresholdChoice",
    "VoronoiOtsuSettings",
    "pooled_scores",
    "tune_thresholds_on_outputs",
    "voronoi_otsu_labels",
]
