"""Small helpers for the progress generators the core functions are written as."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TypeVar

T = TypeVar("T")
P = TypeVar("P")
Q = TypeVar("Q")


def result_of(gen: Generator[object, None, T]) -> T:
    """Run a progress generator to its end, ignoring what it yields; its return value."""
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value


def mapped(gen: Generator[P, None, T], progress: Callable[[P], Q]) -> Generator[Q, None, T]:
    """``gen`` with each yielded progress passed through ``progress``; the same return value.
    Closing this closes ``gen``."""
    try:
        while True:
            try:
                item = next(gen)
            except StopIteration as stop:
                return stop.value
            yield progress(item)
    finally:
        gen.close()
