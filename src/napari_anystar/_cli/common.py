"""Helpers shared by the CLI sub-commands."""

from __future__ import annotations

from typing import Any


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


def run_notes(name: str, result: Any, polarity: str) -> list[str]:
    """The stderr lines about a finished ``anystar segment`` run of ``name`` (whole-volume
    or block-wise ``result``): the *auto* scale's note (a warning where it fell back), and
    that *auto* polarity segmented the negated volume (not said for a stated polarity)."""
    notes = []
    if result.auto is not None:
        warning = "warning: " if result.auto.fell_back else ""
        notes.append(f"{name}: {warning}{result.auto.note}")
    if result.settings.invert and polarity == "auto":
        notes.append(f"{name}: the objects are darker than their surroundings: segmented the "
                     "negated volume")
    return notes
