"""Small helpers for the progress generators the core functions are written as."""

from __future__ import annotations

from collections.abc import Generator
from typing import TypeVar

T = TypeVar("T")


def result_of(gen: Generator[object, None, T]) -> T:
    """Run a progress generator to its end, ignoring what it yields; its return value."""
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value
