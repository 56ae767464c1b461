"""`ballast engine ...` sub-commands (placeholder until the engine lands)."""

import argparse


def register(areas: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    areas.add_parser("engine", help="rebalance and drift from scenario files")
