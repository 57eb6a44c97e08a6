"""Launcher bookkeeping without Spark: which rank gets blamed, from the per-rank status files.

The end-to-end launches (TorchDistributor, both modes) are in test_train_dist.py.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spark_jobs.launch import diagnose, resolve_function
from spark_jobs.launch.rank import rank_entry
from spark_jobs.launch.status import write_error


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
    # rank_entry traps SIGTERM (right in a rank process): keep it from replacing pytest's handler.
    monkeypatch.setattr(signal, "signal", lambda *_: None)
    assert rank_entry((abs, -4, str(tmp_path))) == 4
    assert pickle.loads((tmp_path / "rank-3.ok").read_bytes()) == 4
    assert (tmp_path / "rank-3.pid").read_text().split()[0] == str(os.getpid())
    with pytest.raises(ZeroDivisionError):
        rank_entry((lambda x: 1 / x, 0, str(tmp_path)))
    failure = diagnose(tmp_path, 4)
    assert failure is not None and failure.rank == 3 and "ZeroDivisionError" in failure.tail


def test_error_file_is_written_atomically(tmp_path: Path) -> None:
    try:
        raise OSError("disk on fire")
    except OSError as exc:
        write_error(tmp_path, 0, exc)
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

    from spark_jobs.launch import rank as rank_module

    armed: list[object] = []
    monkeypatch.setattr(atexit, "register", armed.append)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    rank_module._exit_early_when_done()
    assert armed == []
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "run-1")
    rank_module._exit_early_when_done()
    assert armed == [rank_module._exit_without_native_teardown]


def test_function_references_resolve_on_the_rank_side() -> None:
    assert resolve_function("os.path:join") is os.path.join
    assert resolve_function(abs) is abs
    with pytest.raises(ValueError, match=r"expected 'package\.module:function'"):
        resolve_function("os.path.join")
    with pytest.raises(ValueError, match="not callable"):
        resolve_function("os:sep")


def test_rank_entry_reports_an_unimportable_reference_as_the_ranks_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(signal, "signal", lambda *a: None)
    with pytest.raises(ModuleNotFoundError):
        rank_entry(("no_such_module_xyz:fn", None, str(tmp_path)))
    assert diagnose(tmp_path, 1) is not None and "no_such_module_xyz" in diagnose(tmp_path, 1).tail  # type: ignore[union-attr]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_torchrun_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """The guard that replaces TorchDistributor's wrapper: kill the launching process, torchrun and
    its rank go too (otherwise they would train on as orphans)."""
    rank_script = tmp_path / "rank.py"
    rank_script.write_text(
        "import os, pathlib, sys, time\n"
        "pathlib.Path(sys.argv[1]).write_text(str(os.getpid()))\n"
        "time.sleep(120)\n"
    )
    pids = tmp_path / "pids"
    # The launching process: starts the guard (which becomes torchrun), records pids, then waits.
    starter = (
        "import os, subprocess, sys, time\n"
        "from spark_jobs.launch.torchrun import TORCHRUN_EXEC\n"
        "p = subprocess.Popen([sys.executable, '-c', TORCHRUN_EXEC, str(os.getpid()), '--standalone',\n"
        f"    '--nproc_per_node=1', {str(rank_script)!r}, {str(tmp_path / 'rank.pid')!r}])\n"
        f"open({str(pids)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", starter])
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "rank.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (tmp_path / "rank.pid").exists(), "the rank never started"
        torchrun_pid = int(pids.read_text())
        rank_pid = int((tmp_path / "rank.pid").read_text())
        assert _alive(torchrun_pid) and _alive(rank_pid)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 30
        while (_alive(torchrun_pid) or _alive(rank_pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(torchrun_pid), "torchrun outlived the process that started it"
        assert not _alive(rank_pid), "the rank outlived its torchrun"
    finally:
        parent.kill()


def test_guard_starts_nothing_when_its_launcher_is_already_gone() -> None:
    from spark_jobs.launch.torchrun import TORCHRUN_EXEC

    # argv[1] names a parent that is not ours: the guard must refuse instead of starting torchrun.
    done = subprocess.run(
        [sys.executable, "-c", TORCHRUN_EXEC, "1", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and "torchrun not started" in done.stderr


def test_importing_the_rank_module_imports_no_pyspark() -> None:
    # A fresh interpreter, as on a rank: what `python -m spark_jobs.launch.rank` imports before it runs.
    probe = (
        "import sys, spark_jobs.launch.rank\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyspark', 'py4j', 'torch')))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_rank_module_refuses_a_malformed_command_line() -> None:
    # -W error: the package must not import the rank module itself (runpy would warn about it).
    done = subprocess.run(
        [sys.executable, "-W", "error", "-m", "spark_jobs.launch.rank", "--call"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stderr.startswith("usage: python -m spark_jobs.launch.rank")


def test_torchrun_command_local_mode() -> None:
    from pyspark.ml.torch.distributor import TorchDistributor

    from spark_jobs.launch.torchrun import RANK_MODULE, TORCHRUN_EXEC, torchrun_command

    torchrun_args, per_node = TorchDistributor._get_torchrun_args(True, 3)
    command = torchrun_command("/py", 4242, torchrun_args, per_node, RANK_MODULE, "/l", ("--call",))
    assert command == [
        "/py",
        "-c",
        TORCHRUN_EXEC,
        "4242",
        "--standalone",
        "--nnodes=1",
        "--nproc_per_node=3",
        "-m",
        "spark_jobs.launch.rank",
        "--launch-dir",
        "/l",
        "--call",
    ]


def test_torchrun_command_distributed_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    from pyspark.ml.torch.distributor import TorchDistributor

    from spark_jobs.launch.torchrun import TORCHRUN_EXEC, torchrun_command

    # What TorchDistributor sets in each barrier task: a node with two GPUs, the second of two nodes.
    for name, value in {
        "MASTER_ADDR": "10.0.0.1",
        "MASTER_PORT": "29500",
        "RANK": "1",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "PYSPARK_TORCH_DISTRIBUTOR_RDZV_ID": "run-7",
    }.items():
        monkeypatch.setenv(name, value)
    torchrun_args, per_node = TorchDistributor._get_torchrun_args(False, 4)
    command = torchrun_command("/py", 1, torchrun_args, per_node, "m", "/l", ("train.py", "--lr", "0.1"))
    assert command[:4] == ["/py", "-c", TORCHRUN_EXEC, "1"]
    assert command[4:] == [
        "--nnodes=2",
        "--node_rank=1",
        "--rdzv_endpoint=10.0.0.1:29500",
        "--rdzv_id=run-7",
        "--nproc_per_node=2",
        "-m",
        "m",
        "--launch-dir",
        "/l",
        "train.py",
        "--lr",
        "0.1",
    ]


def test_guard_chain_switch_reads_the_environment() -> None:
    from spark_jobs.launch.torchrun import PLAIN_TORCHRUN_ENV, guard_chain_enabled

    assert guard_chain_enabled({})
    assert guard_chain_enabled({PLAIN_TORCHRUN_ENV: "0"})
    assert not guard_chain_enabled({PLAIN_TORCHRUN_ENV: "1"})
    assert not guard_chain_enabled({PLAIN_TORCHRUN_ENV: "true"})


def test_status_files_round_trip(tmp_path: Path) -> None:
    from spark_jobs.launch import status

    status.write_pid(tmp_path, 2, 4321)
    status.write_ok(tmp_path, 2, {"loss": 0.5})
    status.write_error(tmp_path, 1, None, "stopped by signal 15")
    assert status.ranks_with(tmp_path, status.PID) == {2}
    assert status.ranks_with(tmp_path, status.OK) == {2}
    assert status.read_ok(tmp_path, 2) == (True, {"loss": 0.5})
    assert status.read_ok(tmp_path, 0) == (False, None)
    assert status.local_pid(tmp_path, 2) == 4321
    errors = status.read_errors(tmp_path)
    assert [(e.rank, e.type, e.traceback) for e in errors] == [(1, "Signal", "stopped by signal 15")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank-1.error", "rank-2.ok", "rank-2.pid"]
