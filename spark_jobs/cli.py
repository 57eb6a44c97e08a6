"""Shared command-line plumbing: every job's ``main`` goes through :func:`run_cli`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from spark_jobs.errors import EXIT_USAGE, JobInputError

if TYPE_CHECKING:
    from training.config import TrainConfig


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults for every option and keep description layout."""


def run_cli(job: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``job(argv)``; turn :class:`JobInputError` into one ``error:`` line and exit code 2."""
    try:
        code = job(argv)
    except JobInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


def add_config_arguments(
    parser: argparse.ArgumentParser, config_help: str, set_example: str, overwrite_help: str
) -> None:
    """The options of the TOML-configured jobs (train, collab): --config, --set, --overwrite, --describe."""
    parser.add_argument("--config", default=None, help=config_help)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help=f"override one config key, repeatable, e.g. {set_example}",
    )
    parser.add_argument("--overwrite", action="store_true", help=overwrite_help)
    parser.add_argument(
        "--describe", action="store_true", help="print every config key, its value and meaning; exit"
    )


def absolute_path(path: str) -> str:
    """``path`` made absolute (empty stays empty): ranks and executors may run in another directory."""
    return str(Path(path).expanduser().absolute()) if path else path


def with_absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """A copy of a train/collab config whose data and run paths are absolute (see absolute_path)."""
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(
            cfg.data, shards=absolute_path(cfg.data.shards), test=absolute_path(cfg.data.test)
        ),
        run=dataclasses.replace(cfg.run, dir=absolute_path(cfg.run.dir)),
    )
