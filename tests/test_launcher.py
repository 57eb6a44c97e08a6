"""Launcher bookkeeping without Spark: which rank gets blamed, from the per-rank status files.

The end-to-end launches (TorchDistributor, both modes) are in test_train_dist.py.
"""

from __future__ import annotations

import os
import pickle
import signal
from pathlib import Path

import pytest

from spark_jobs.launcher import _rank_entry, _record_error, diagnose


def started(d: Path, *ranks: int) -> None:
    for r in ranks:
        (d / f"rank-{r}.pid").write_text(f"{1000 + r} somehost")


def error(d: Path, rank: int, kind: str, text: str, t: float) -> None:
    info = {"time": t, "rank": rank, "type": kind, "traceback": text, "host": "h"}
    (d / f"rank-{rank}.error").write_bytes(pickle.dumps(info))


def test_no_failure(tmp_path: Path) -> None:
    started(tmp_path, 0, 1)
    for r in (0, 1):
        (tmp_path / f"rank-{r}.ok").write_bytes(pickle.dumps(r))
    assert diagnose(tmp_path, 2) is None


def test_real_exception_beats_its_consequences(tmp_path: Path) -> None:
    started(tmp_path, 0, 1, 2)
    error(tmp_path, 0, "RuntimeError", "...\nRuntimeError: Connection closed by peer [127.0.0.1]:1", t=5.0)
    error(tmp_path, 2, "Signal", "stopped by signal 15", t=4.0)
    error(tmp_path, 1, "ValueError", "Traceback ...\nValueError: bad batch", t=6.0)
    failure = diagnose(tmp_path, 3)
    assert failure is not None and failure.rank == 1 and not failure.abrupt
    assert "ValueError: bad batch" in str(failure) and "bad batch" in failure.tail


def test_earliest_real_exception_wins(tmp_path: Path) -> None:
    started(tmp_path, 0, 1)
    error(tmp_path, 0, "KeyError", "KeyError: 'x'", t=2.0)
    error(tmp_path, 1, "ValueError", "ValueError: y", t=1.0)
    failure = diagnose(tmp_path, 2)
    assert failure is not None and failure.rank == 1


def test_rank_that_vanished_is_blamed_over_peers_that_lost_it(tmp_path: Path) -> None:
    started(tmp_path, 0, 1)
    # Rank 1 called os._exit: no status file; rank 0 only saw its peer disappear.
    error(tmp_path, 0, "DistBackendError", "gloo: Connection reset by peer", t=1.0)
    failure = diagnose(tmp_path, 2)
    assert failure is not None and failure.rank == 1 and failure.abrupt
    assert "without a Python traceback" in str(failure)


def test_rank_entry_records_result_and_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "3")
    # _rank_entry traps SIGTERM (right in a rank process): keep it from replacing pytest's handler.
    monkeypatch.setattr(signal, "signal", lambda *_: None)
    assert _rank_entry((abs, -4, str(tmp_path))) == 4
    assert pickle.loads((tmp_path / "rank-3.ok").read_bytes()) == 4
    assert (tmp_path / "rank-3.pid").read_text().split()[0] == str(os.getpid())
    with pytest.raises(ZeroDivisionError):
        _rank_entry((lambda x: 1 / x, 0, str(tmp_path)))
    failure = diagnose(tmp_path, 4)
    assert failure is not None and failure.rank == 3 and "ZeroDivisionError" in failure.tail


def test_error_file_is_written_atomically(tmp_path: Path) -> None:
    try:
        raise OSError("disk on fire")
    except OSError as exc:
        _record_error(tmp_path, 0, exc)
    assert [p.name for p in tmp_path.iterdir()] == ["rank-0.error"]
    assert "disk on fire" in pickle.loads((tmp_path / "rank-0.error").read_bytes())["traceback"]


def test_ranks_that_all_recorded_results_are_a_success_whatever_happened_after(tmp_path: Path) -> None:
    # Rank 1 finished, then aborted in teardown; torchrun stopped rank 0 (already done) with SIGTERM.
    started(tmp_path, 0, 1)
    for r in (0, 1):
        (tmp_path / f"rank-{r}.ok").write_bytes(pickle.dumps(r))
    error(tmp_path, 0, "Signal", "stopped by signal 15", 1.0)
    assert diagnose(tmp_path, 2) is None
    # Without rank 1's result the same files are a failure.
    (tmp_path / "rank-1.ok").unlink()
    assert diagnose(tmp_path, 2) is not None


def test_early_exit_hook_is_armed_only_in_torchrun_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    import atexit

    from spark_jobs import launcher

    armed: list[object] = []
    monkeypatch.setattr(atexit, "register", armed.append)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    launcher._exit_early_when_done()
    assert armed == []
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "run-1")
    launcher._exit_early_when_done()
    assert armed == [launcher._exit_without_native_teardown]
