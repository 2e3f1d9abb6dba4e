"""Helpers shared by the CLI sub-commands."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


def negation_note(name: str, invert: bool, polarity: str) -> str | None:
    """The stderr line saying that *auto* polarity segmented ``name`` negated (None when it
    did not, or when the user stated the polarity)."""
    if not (invert and polarity == "auto"):
        return None
    return f"{name}: the objects are darker than their surroundings: segmented the negated volume"
