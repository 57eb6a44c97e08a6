"""Shared command-line plumbing: every job's ``main`` goes through :func:`run_cli`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from spark_jobs.errors import EXIT_USAGE, JobInputError


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
