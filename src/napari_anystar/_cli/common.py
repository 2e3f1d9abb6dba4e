"""Helpers shared by the CLI sub-commands."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""
