"""GPT benchmarks: training-step speed against a bare PyTorch loop, and learning on tinyshakespeare.

``speed``: the training loop (``training.lm_loop.run_training``, one process, one-process gloo
group) against a bare loop written here with nothing but the model, AdamW, the schedule and
gradient clipping, on the same model, batch and block size. The two alternate, several rounds
each (who goes first alternates too), and the medians are compared, by wall clock and by the
process's CPU time (the machine is shared: CPU time is the steadier of the two).

``learn``: the CPU config (``conf/train/gpt_char.toml``) through ``spark-collab train`` on 2 DDP
ranks, once per seed; prints the best val loss against nanoGPT's 1.88, the wall time, the time from
the command to the first step and a sample from ``spark-collab generate``. With ``--nanogpt DIR`` (a
checkout of karpathy/nanoGPT) nanoGPT's own ``train.py`` runs the same config with the same seeds
right after each of ours, as a yardstick measured on the same machine. The char token shards of
tinyshakespeare are built here with numpy (first 90% train, last 10% val, as nanoGPT's
prepare.py splits it) with the project's char tokenizer.

    .venv/bin/python bench/gpt.py speed [--iters 60] [--rounds 3] [--threads 1]
    .venv/bin/python bench/gpt.py learn [--iters 2000] [--seeds 1337,0,1] [--nanogpt DIR]
    .venv/bin/python bench/gpt.py chinese [--iters 2000] [--vocab 8000]
    .venv/bin/python bench/gpt.py shards --out DIR

``shards``: only build those char token shards, for a machine without ``../shared`` (the GPU
machine: ``bench/gpu_gpt.sh``).

``chinese``: 红楼梦 end to end. ``spark-collab corpus`` builds a ``words:V`` vocabulary from the
``cjk`` word count (paragraphs as documents, 10% of them in val), the CPU config trains on it, and
the val perplexity is printed next to that of a unigram model: add-one smoothed token frequencies
of the train split, scored on every val token.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TINYSHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
NANOGPT_BABY_VAL = 1.88
HONGLOUMENG = REPO.parent / "shared" / "data" / "chinese-classics" / "hongloumeng.txt"


def build_char_shards(out: Path) -> Path:
    """tinyshakespeare as char token shards (one train shard, one val shard) under ``out``."""
    from contracts.manifest import Manifest
    from contracts.tokenizer import CharTokenizer
    from contracts.tokens import TOKENIZER_FILE, token_dtype_for, write_token_shard

    text = TINYSHAKESPEARE.read_text(encoding="utf-8")
    tok = CharTokenizer.train([text])
    ids = np.append(tok.encode_array(text), tok.eot_id)
    cut = int(len(ids) * 0.9)
    dtype = token_dtype_for(tok.vocab_size)
    splits = {
        split: {"shards": [write_token_shard(out, split, 0, part, np.array([len(part)]), dtype)]}
        for split, part in (("train", ids[:cut]), ("val", ids[cut:]))
    }
    tok.save(out / TOKENIZER_FILE)
    Manifest(
        kind="tokens",
        splits=splits,
        source={"path": str(TINYSHAKESPEARE), "characters": len(text)},
        extra={
            "vocab_size": tok.vocab_size,
            "token_dtype": dtype,
            "tokenizer": {"kind": "char", "file": TOKENIZER_FILE, "sha256": tok.sha256()},
        },
    ).write(out)
    print(
        f"shards: {out} ({len(text):,} characters, vocab {tok.vocab_size}, {cut:,} train / {len(ids) - cut:,} val)"
    )
    return out


# ---------------------------------------------------------------------------------------------- speed


def bare_loop_tokens_per_s(cfg: object, data: np.ndarray, vocab: int, iters: int) -> tuple[float, float]:
    """The same step with nothing around it: random windows from one in-memory array."""
    import torch
    import torch.nn.functional as F

    from training.lm_loop import build_adamw, build_gpt

    torch.manual_seed(0)
    model = build_gpt(cfg.model, vocab)  # type: ignore[attr-defined]
    opt, sched = build_adamw(model, cfg.optim)  # type: ignore[attr-defined]
    tokens = torch.from_numpy(data.astype(np.int64))
    b, t = cfg.train.batch_size, cfg.model.block_size  # type: ignore[attr-defined]
    gen = torch.Generator().manual_seed(0)
    model.train()
    start = cpu_start = None
    for i in range(iters + 1):
        if i == 1:  # the first step pays allocation; time the rest
            start, cpu_start = time.perf_counter(), time.process_time()
        ix = torch.randint(len(tokens) - t - 1, (b,), generator=gen)
        x = torch.stack([tokens[j : j + t] for j in ix])
        y = torch.stack([tokens[j + 1 : j + t + 1] for j in ix])
        logits, _ = model(x)
        loss = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)  # type: ignore[attr-defined]
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    loss.item()
    assert start is not None and cpu_start is not None
    tokens = b * t * iters
    return tokens / (time.perf_counter() - start), tokens / (time.process_time() - cpu_start)


def loop_tokens_per_s(cfg: object, iters: int) -> tuple[float, float]:
    """tokens/s of the project's loop over its second ``iters`` iterations (the first block of
    ``iters`` carries start-up), logging once per block as a real run does, no evaluations."""
    import dataclasses

    from training.dist import distributed
    from training.lm_loop import run_training

    cfg = dataclasses.replace(
        cfg,  # type: ignore[type-var]
        train=dataclasses.replace(cfg.train, max_iters=2 * iters, log_interval=iters, eval_interval=10**6),  # type: ignore[attr-defined]
        run=dataclasses.replace(cfg.run, checkpoint=False, plots=False),  # type: ignore[attr-defined]
    )
    with distributed() as ctx:
        run_training(cfg, ctx)  # type: ignore[arg-type]
    recs = [json.loads(line) for line in (Path(cfg.run.dir) / "metrics.jsonl").read_text().splitlines()]  # type: ignore[attr-defined]
    last = [r for r in recs if r["kind"] == "train"][-1]
    return last["tokens_per_s"], cfg.train.batch_size * cfg.model.block_size / last["cpu_s_per_iter"]  # type: ignore[attr-defined]


def speed(args: argparse.Namespace) -> None:
    import torch

    from contracts.tokens import open_token_shard
    from training.config import load_config

    # One thread, as each rank of a 2-rank launch runs here: on a shared 2-core machine a second
    # thread mostly waits for the first.
    torch.set_num_threads(args.threads)
    shards = build_char_shards(REPO / "runs" / "bench" / "shakespeare_char")
    cfg = load_config(
        REPO / "conf" / "train" / "gpt_char.toml",
        [
            f"data.shards='{shards}'",
            f"run.dir='{REPO / 'runs' / 'bench' / 'gpt_speed'}'",
            "launch.num_processes=1",
        ],
    )
    shard = open_token_shard(shards, "train", 0)
    data = np.asarray(shard.tokens)
    loop, bare = [], []
    for r in range(args.rounds):
        # Alternate which peer goes first: neither always inherits the other's warm caches.
        if r % 2:
            bare.append(bare_loop_tokens_per_s(cfg, data, shard.vocab_size, args.iters))
            loop.append(loop_tokens_per_s(cfg, args.iters))
        else:
            loop.append(loop_tokens_per_s(cfg, args.iters))
            bare.append(bare_loop_tokens_per_s(cfg, data, shard.vocab_size, args.iters))
        print(
            f"  round: loop {loop[-1][0]:.0f} tokens/s ({loop[-1][1]:.0f} per CPU-second), "
            f"bare {bare[-1][0]:.0f} tokens/s ({bare[-1][1]:.0f} per CPU-second)",
            flush=True,
        )
    print(
        f"speed (gpt_char model, batch {cfg.train.batch_size} x {cfg.model.block_size}, 1 process, "
        f"{torch.get_num_threads()} thread(s), {args.iters} iterations x {args.rounds} rounds, medians):"
    )
    for name, k in (("wall clock", 0), ("CPU time", 1)):
        lm, bm = statistics.median(r[k] for r in loop), statistics.median(r[k] for r in bare)
        print(f"  {name}: loop {lm:.0f}, bare PyTorch loop {bm:.0f} tokens/s, ratio {lm / bm:.3f}")


# ---------------------------------------------------------------------------------------------- learn


NANOGPT_BABY_FLAGS = [
    "--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=250", "--block_size=64",
    "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=2000",
    "--lr_decay_iters=2000", "--dropout=0.0",
]  # fmt: skip
"""nanoGPT's README command for the CPU baby run, on top of config/train_shakespeare_char.py."""

# nanoGPT seeds torch with a fixed 1337; the wrapper shifts that seed so that its run for seed S
# starts from torch.manual_seed(S), like ours, without touching its code.
NANOGPT_SEEDED_RUN = """
import runpy, sys, torch
seed = int(sys.argv[1])
original = torch.manual_seed
torch.manual_seed = lambda s: original(s - 1337 + seed)
sys.argv = ["train.py"] + sys.argv[2:]
runpy.run_path("train.py", run_name="__main__")
"""


def our_run(args: argparse.Namespace, shards: Path, seed: int) -> dict[str, object]:
    """``spark-collab train`` with gpt_char.toml at ``seed`` on 2 DDP ranks; its result and timings."""
    run_dir = REPO / "runs" / "bench" / f"gpt_char-seed{seed}"
    cmd = [
        sys.executable, "-m", "spark_jobs", "train",
        "--config", str(REPO / "conf" / "train" / "gpt_char.toml"),
        "--set", f"data.shards={shards}",
        "--set", f"run.dir={run_dir}",
        "--set", f"train.seed={seed}",
        "--set", f"train.max_iters={args.iters}",
        "--set", f"optim.lr_decay_iters={args.iters}",
        "--set", f"optim.warmup_iters={min(100, args.iters // 10)}",
        "--overwrite",
    ]  # fmt: skip
    t0 = time.time()
    subprocess.run(cmd, check=True, cwd=REPO)
    wall = time.time() - t0
    result = json.loads((run_dir / "result.json").read_text())
    return {
        "run_dir": run_dir,
        "wall": wall,
        "first_step": result["timings"]["first_step_unix"] - t0,
        **result,
    }


def nanogpt_run(checkout: Path, seed: int) -> tuple[float, float]:
    """nanoGPT's own ``train.py`` (baby flags) at ``seed``: (best val loss, wall seconds)."""
    data = checkout / "data" / "shakespeare_char"
    if not (data / "val.bin").is_file():  # its prepare.py downloads input.txt unless it is there
        (data / "input.txt").write_bytes(TINYSHAKESPEARE.read_bytes())
        subprocess.run([sys.executable, "prepare.py"], check=True, cwd=data, capture_output=True)
    cmd = [sys.executable, "-c", NANOGPT_SEEDED_RUN, str(seed), "config/train_shakespeare_char.py"]
    t0 = time.time()
    out = subprocess.run(cmd + NANOGPT_BABY_FLAGS, check=True, cwd=checkout, capture_output=True, text=True)
    wall = time.time() - t0
    vals = [float(line.rsplit("val loss", 1)[1]) for line in out.stdout.splitlines() if "val loss" in line]
    if not vals:
        raise RuntimeError(f"nanoGPT printed no val loss:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return min(vals), wall


def learn(args: argparse.Namespace) -> None:
    shards = build_char_shards(REPO / "runs" / "bench" / "shakespeare_char")
    seeds = [int(s) for s in args.seeds.split(",")]
    ours: list[float] = []
    theirs: list[float] = []
    for seed in seeds:
        result = our_run(args, shards, seed)
        best = float(result["best_val_loss"])  # type: ignore[arg-type]
        ours.append(best)
        print(
            f"learn: seed {seed}, gpt_char on {result['world_size']} {result['strategy']} ranks, "
            f"{result['iters']} iterations: best val loss {best:.4f} (nanoGPT's published {NANOGPT_BABY_VAL}), "
            f"wall {result['wall']:.0f}s, command -> first step {result['first_step']:.1f}s, "
            f"{result['tokens_per_s']:.0f} tokens/s, MFU {100 * result['mfu']:.2f}% against {result['mfu_peak']}",
            flush=True,
        )
        if args.nanogpt:
            val, wall = nanogpt_run(Path(args.nanogpt), seed)
            theirs.append(val)
            print(
                f"learn: seed {seed}, nanoGPT train.py (1 process): best val loss {val:.4f}, wall {wall:.0f}s",
                flush=True,
            )
    mean = statistics.mean(ours)
    line = f"learn: ours over seeds {seeds}: mean best val {mean:.4f}, max {max(ours):.4f}"
    if theirs:
        line += f"; nanoGPT's own code: mean {statistics.mean(theirs):.4f}; ours / nanoGPT {mean / statistics.mean(theirs):.4f}"
    print(line)
    run_dir = REPO / "runs" / "bench" / f"gpt_char-seed{seeds[0]}"
    sample = subprocess.run(
        [sys.executable, "-m", "spark_jobs", "generate", "--run", str(run_dir), "--max-new-tokens", "500"],
        check=True,
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout
    print(f"curve: {run_dir / 'curves.png'}; sample:\n{sample}")


# -------------------------------------------------------------------------------------------- chinese


def unigram_val_perplexity(shards: Path) -> tuple[float, int]:
    """Perplexity on every val token of the add-one unigram model of the train split, and the
    number of val tokens."""
    from contracts.manifest import Manifest
    from contracts.tokens import open_token_shard

    manifest = Manifest.read(shards, kind="tokens")
    vocab = int(manifest["vocab_size"])
    counts = np.zeros(vocab, dtype=np.int64)
    for i in range(manifest.num_shards("train")):
        counts += np.bincount(open_token_shard(shards, "train", i, manifest=manifest).tokens, minlength=vocab)
    log_p = np.log((counts + 1) / (counts.sum() + vocab))
    nll, tokens = 0.0, 0
    for i in range(manifest.num_shards("val")):
        val = open_token_shard(shards, "val", i, manifest=manifest).tokens
        nll -= float(log_p[np.asarray(val, dtype=np.int64)].sum())
        tokens += len(val)
    return math.exp(nll / tokens), tokens


def chinese(args: argparse.Namespace) -> None:
    shards = REPO / "runs" / "bench" / "hongloumeng_words"
    run_dir = REPO / "runs" / "bench" / "gpt_hongloumeng"
    spark_job = [sys.executable, "-m", "spark_jobs"]
    subprocess.run(
        [*spark_job, "corpus", str(HONGLOUMENG), "--output", str(shards), "--docs", "paragraph",
         "--tokenizer", f"words:{args.vocab}", "--word-split", "cjk", "--val", "0.1", "--overwrite"],
        check=True, cwd=REPO,
    )  # fmt: skip
    baseline, val_tokens = unigram_val_perplexity(shards)
    t0 = time.time()
    subprocess.run(
        [*spark_job, "train", "--config", str(REPO / "conf" / "train" / "gpt_char.toml"),
         "--set", f"data.shards={shards}", "--set", f"run.dir={run_dir}",
         "--set", f"train.max_iters={args.iters}", "--set", f"optim.lr_decay_iters={args.iters}",
         "--set", f"optim.warmup_iters={min(100, args.iters // 10)}", "--overwrite"],
        check=True, cwd=REPO,
    )  # fmt: skip
    wall = time.time() - t0
    result = json.loads((run_dir / "result.json").read_text())
    best = result["best_val_loss"]
    sample = subprocess.run(
        [*spark_job, "generate", "--run", str(run_dir), "--prompt", "宝玉", "--max-new-tokens", "60", "--seed", "7"],
        check=True, cwd=REPO, capture_output=True, text=True,
    ).stdout  # fmt: skip
    print(
        f"chinese: 红楼梦, words:{args.vocab} (cjk), {val_tokens} val tokens; gpt_char model, "
        f"{result['iters']} iterations on {result['world_size']} ranks, wall {wall:.0f}s: "
        f"best val loss {best:.4f} = perplexity {math.exp(best):.1f}; unigram baseline perplexity "
        f"{baseline:.1f} (ratio {math.exp(best) / baseline:.3f})"
    )
    print(f"curve: {run_dir / 'curves.png'}; sample:\n{sample}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p_speed = sub.add_parser("speed")
    p_speed.add_argument("--iters", type=int, default=60)
    p_speed.add_argument("--rounds", type=int, default=3)
    p_speed.add_argument("--threads", type=int, default=1)
    p_learn = sub.add_parser("learn")
    p_learn.add_argument("--iters", type=int, default=2000)
    p_learn.add_argument("--seeds", default="1337", help="comma-separated training seeds")
    p_learn.add_argument(
        "--nanogpt", default="", metavar="DIR", help="a checkout of karpathy/nanoGPT to run as a yardstick"
    )
    p_chinese = sub.add_parser("chinese")
    p_chinese.add_argument("--iters", type=int, default=2000)
    p_chinese.add_argument("--vocab", type=int, default=8000)
    p_shards = sub.add_parser("shards")
    p_shards.add_argument("--out", required=True, help="a directory that does not exist yet")
    args = parser.parse_args()
    needs = (TINYSHAKESPEARE, HONGLOUMENG) if args.what == "chinese" else (TINYSHAKESPEARE,)
    for needed in needs:
        if not needed.is_file():
            sys.exit(f"error: {needed} not found (the benchmarks need ../shared/data)")
    if args.what == "shards":
        out = Path(args.out)
        if out.exists():
            sys.exit(f"error: --out {out} exists; choose a new directory")
        build_char_shards(out)
        return
    {"speed": speed, "learn": learn, "chinese": chinese}[args.what](args)


if __name__ == "__main__":
    main()
