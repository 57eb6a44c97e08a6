"""Every command in the ``bash`` blocks of ``docs/*.md`` runs as written, doc by doc, in reading order.

The same harness as the README's (``test_readme_commands``; plain ``spark-collab`` commands go to its
long-lived job driver): a working copy with the repository
linked in and an empty ``runs/``, downloads replaced by their copies in ``../shared/data``, long runs
shortened by ``LONG_RUNS``. The docs are run in the order a reader meets them, so that a doc finds
what an earlier one made (``training.md`` trains the run that ``predict.md`` scores).

Left out, each with its reason as the skip message:

- ``cluster.md``: its commands need the standalone cluster that ``make cluster-up`` starts;
  ``tests/test_cluster.py`` submits the same jobs to a live cluster;
- ``benchmarks.md``'s ``bench/`` runs: they take from minutes to an hour each and their output is the
  recorded numbers beside them;
- make targets, and what the README harness leaves out (downloads, absent ``../shared``).

Together the docs take well over half an hour on 2 cores, so this module runs only when asked:
``SPARK_COLLAB_DOC_COMMANDS=1 .venv/bin/python -m pytest tests/test_doc_commands.py``
(``make test-docs``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from test_readme_commands import (
    ROOT,
    Command,
    job_driver,  # noqa: F401 (a fixture: plain spark-collab commands run in one long-lived driver)
    plain_spark_collab,
    readme_commands,
    run_as_written,
    skip_reason,
    working_copy,
)

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.skipif(
        os.environ.get("SPARK_COLLAB_DOC_COMMANDS") != "1",
        reason="the docs' commands take over half an hour; run with SPARK_COLLAB_DOC_COMMANDS=1 (make test-docs)",
    ),
]

# Reading order: data before training, training before inference, the corpus before the GPT.
DOC_ORDER = (
    "wordcount.md",
    "data.md",
    "training.md",
    "collab.md",
    "corpus.md",
    "gpt.md",
    "predict.md",
    "benchmarks.md",
)
NOT_RUN = {
    "cluster.md": "needs the standalone cluster of make cluster-up; tests/test_cluster.py submits these jobs"
}


def doc_commands() -> list[tuple[str, Command]]:
    """(doc name, command) for every doc in reading order; the docs not listed come last."""
    docs = sorted((ROOT / "docs").glob("*.md"), key=lambda p: (*DOC_ORDER, p.name).index(p.name))
    return [
        (doc.name, command) for doc in docs for command in readme_commands(doc.read_text(encoding="utf-8"))
    ]


def doc_skip_reason(doc: str, command: Command, workdir: Path) -> str:
    if doc in NOT_RUN:
        return NOT_RUN[doc]
    if re.search(r"\bbench/\w+\.py\b", command.text):
        return "a benchmark run (minutes to an hour); its numbers are recorded beside it"
    return skip_reason(command, workdir)


def test_every_doc_with_commands_is_in_the_reading_order() -> None:
    with_commands = {doc for doc, _ in doc_commands()}
    assert with_commands <= set(DOC_ORDER) | set(NOT_RUN), with_commands - set(DOC_ORDER) - set(NOT_RUN)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return working_copy(tmp_path_factory.mktemp("docs"))


@pytest.mark.parametrize(
    ("doc", "command"), doc_commands(), ids=lambda v: v if isinstance(v, str) else v.name
)
def test_doc_command_runs(doc: str, command: Command, workdir: Path, request: pytest.FixtureRequest) -> None:
    reason = doc_skip_reason(doc, command, workdir)
    if reason:
        pytest.skip(reason)
    returncode, stderr, tail = run_as_written(command, workdir, request, plain_spark_collab(command))
    assert returncode == command.expected_exit, (
        f"docs/{doc} line {command.line}: {command.as_run()}\nexit {returncode}\n{tail}"
    )
    if command.expected_exit == 0:
        assert not re.search(r"^Traceback", stderr, re.MULTILINE), tail
