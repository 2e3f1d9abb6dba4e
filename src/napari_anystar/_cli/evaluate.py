"""PLACEHOLDER: ``anystar evaluate`` (being written; replace this whole file)."""

from __future__ import annotations

import argparse
from typing import Any

from napari_anystar._cli.common import UserError


def register(subparsers: Any) -> argparse.ArgumentParser:
    return subparsers.add_parser("evaluate", help="(not ready)")


def run(args: argparse.Namespace) -> int:
    raise UserError("not ready")
