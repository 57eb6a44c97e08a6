"""Helpers for the restart, stall and signal tests: one small config, runs compared bitwise.

A run here: blob shards (2 per split), 2 ranks, global batch 32, 4 epochs of 8 steps (32 steps),
a checkpoint every 5 steps. Step times of a few milliseconds: faults are placed by step, never by
time, so the tests do not depend on the machine's speed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from training.checkpoint import load_model_state

EPOCHS = 4
STEPS_PER_EPOCH = 8
EVERY = 5


def sets(shards: Path, run_dir: Path, *extra: str) -> list[str]:
    """``--set`` arguments for a run of the small config in ``run_dir``."""
    items = [
        f"data.shards='{shards}'",
        f"run.dir='{run_dir}'",
        "launch.num_processes=2",
        "train.batch_size=32",
        f"train.epochs={EPOCHS}",
        "optim.decay=0.01",
        f"run.checkpoint_every={EVERY}",
        "run.plots=false",
        *extra,
    ]
    return [x for item in items for x in ("--set", item)]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(a: Path, b: Path) -> None:
    """Same final parameters (bitwise) and the same per-epoch losses and accuracies."""
    sa, sb = load_model_state(a / "checkpoint.pt"), load_model_state(b / "checkpoint.pt")
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    for ra, rb in zip(metrics(a), metrics(b), strict=True):
        for key in ("epoch", "step", "train_loss", "train_accuracy", "val_accuracy", "lr"):
            assert ra[key] == rb[key], (key, ra, rb)


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (by parent pid, read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def rank_pids(launch_dir: Path) -> list[int]:
    return [int(p.read_text().split()[0]) for p in launch_dir.glob("rank-*.pid")]


def staging_of(run: Path) -> Path | None:
    """The staging directory a running job writes ``run`` into (renamed to ``run`` when it finishes)."""
    from contracts.atomic import final_path

    found = sorted(p for p in run.parent.iterdir() if p != run and final_path(p) == run)
    return found[0] if found else None


def wait_for_staged_file(run: Path, relative: str, timeout: float, proc=None) -> Path | None:  # type: ignore[no-untyped-def]
    """Wait until the running job has written ``relative`` in its staged ``run``; that file, or None."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        staging = staging_of(run)
        if staging is not None and (staging / relative).exists():
            return staging / relative
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.2)
    return False


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}
