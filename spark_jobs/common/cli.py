"""Shared command-line plumbing: every job's ``main`` goes through :func:`run_cli`."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from spark_jobs.common.errors import EXIT_FAILURE, EXIT_USAGE, JobFailure, JobInputError, storage_error

if TYPE_CHECKING:
    from training.config import TrainConfig


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults for every option and keep description layout."""


EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130, as a shell reports a command ended by Ctrl-C
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that the job unwinds as on Ctrl-C: ``finally`` blocks
    run, a training launch stops its ranks, staged output is removed, Spark is stopped."""


def _raise_terminated(signum: int, _frame: object) -> None:
    # Once: a second SIGTERM while the job unwinds must not interrupt its clean-up.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated(f"signal {signum}")


class _DropPy4JInterruptTraceback(logging.Filter):
    """py4j logs a full traceback at ERROR (on the root logger) when Ctrl-C or SIGTERM lands while
    it waits for the JVM's answer. The job reports the interruption in its own one line, so that
    record is dropped; every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        interrupted = record.exc_info is not None and isinstance(record.exc_info[1], KeyboardInterrupt)
        return not (interrupted and record.getMessage().startswith("KeyboardInterrupt while sending command"))


@contextlib.contextmanager
def _quiet_py4j_interrupts() -> Iterator[None]:
    root = logging.getLogger()
    quiet = _DropPy4JInterruptTraceback()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` in the main thread for the block (elsewhere: unchanged)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_cli(job: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``job(argv)``; turn known errors into one ``error:`` line.

    :class:`JobInputError` exits 2, :class:`JobFailure` and a driver JVM that died exit 1; the
    full traceback of a failure goes to a log file named in the line (see :func:`failure_log`).
    Ctrl-C (SIGINT) and SIGTERM stop the job as an exception would, then print one line and exit
    130 or 143 (a training launch kills its ranks on the way; see ``spark_jobs.launch``).
    """
    try:
        with _quiet_py4j_interrupts(), _sigterm_unwinds():
            code = job(argv)
    except JobInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except JobFailure as exc:
        print(f"error: {exc}{_details(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:
        one_line = _known_failure(exc)
        if one_line is None:
            raise
        print(f"error: {one_line}{_details(exc)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(one_line, JobInputError) else EXIT_FAILURE
    except Terminated:
        print("terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return int(code or 0)


def _known_failure(exc: Exception) -> JobInputError | JobFailure | None:
    """One line for a failure that is not a bug of the job: the driver JVM died, or storage refused."""
    if _is_py4j_error(exc) or isinstance(exc, ConnectionError):
        from spark_jobs.common.session import driver_jvm, jvm_exit_code

        code = jvm_exit_code()
        if code is not None:
            pid = driver_jvm().pid  # type: ignore[union-attr]  # set whenever code is
            how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            return JobFailure(
                f"the Spark driver JVM (pid {pid}) died during the job ({how}); outputs are left as they "
                "were before the job (staged outputs are never half-written); run the command again"
            )
    if isinstance(exc, OSError) or _is_py4j_error(exc):
        named = getattr(exc, "filename", None)
        return storage_error(exc, str(named) if named else "writing the job's files")
    return None


def _is_py4j_error(exc: BaseException) -> bool:
    py4j = sys.modules.get("py4j.protocol")
    return py4j is not None and isinstance(exc, py4j.Py4JError)


def failure_log(exc: BaseException) -> Path | None:
    """Write the full traceback of ``exc`` (with its chain) to a log file; its path, or None if unwritable.

    The one-line error is what a user reads; the log keeps what a bug report needs. Set
    ``SPARK_COLLAB_LOG_DIR`` to choose the directory (default: the system temporary directory).
    """
    import tempfile
    import time
    import traceback

    from spark_jobs.common.session.stderr_filter import diverted_text

    directory = Path(os.environ.get("SPARK_COLLAB_LOG_DIR") or tempfile.gettempdir())
    path = directory / f"spark-collab-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        text = "".join(traceback.format_exception(exc))
        worker_stacks = diverted_text()
        if worker_stacks:
            text += (
                "\nPython worker stacks kept off the terminal (lost connections to the JVM):\n"
                + worker_stacks
            )
        path.write_text(text, encoding="utf-8")
    except OSError:
        return None
    return path


def _details(exc: BaseException) -> str:
    log = failure_log(exc)
    return f" (details: {log})" if log else ""


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
    # The GPT config's [data] has no ``test``: only the path fields a section has are rewritten.
    paths = {
        key: absolute_path(getattr(cfg.data, key)) for key in ("shards", "test") if hasattr(cfg.data, key)
    }
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, **paths),
        run=dataclasses.replace(cfg.run, dir=absolute_path(cfg.run.dir)),
    )
    if getattr(cfg.train, "init_from", ""):  # GPT warm start: a run directory the ranks read
        train = dataclasses.replace(cfg.train, init_from=absolute_path(cfg.train.init_from))  # type: ignore[call-arg]
        cfg = dataclasses.replace(cfg, train=train)
    return cfg


def check_run_dir_overlap(cfg: TrainConfig, args: argparse.Namespace) -> None:
    """Refuse a ``run.dir`` that is, contains, or lies inside what the run reads: ``data.shards``,
    ``data.test``, the ``--config`` file and the ``--spark-defaults`` file (``--overwrite`` would delete them).
    """
    from spark_jobs.common.output import check_no_overlap

    run_dir = absolute_path(cfg.run.dir)
    if not run_dir:
        return  # validation names the missing key
    check_no_overlap(run_dir, [cfg.data.shards], flag="run.dir", what="data.shards")
    check_no_overlap(run_dir, [getattr(cfg.data, "test", "")], flag="run.dir", what="data.test")
    check_no_overlap(run_dir, [args.config or "", args.spark_defaults], flag="run.dir", what="config file")
