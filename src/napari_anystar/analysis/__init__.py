"""Metrics, threshold tuning and measurements."""
