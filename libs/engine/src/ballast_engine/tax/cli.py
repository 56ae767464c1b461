"""`ballast taxlot ...` sub-commands (placeholder until the tax engine lands)."""

import argparse


def register(areas: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    areas.add_parser("taxlot", help="tax lots, gains and Form 8949 from trade files")
