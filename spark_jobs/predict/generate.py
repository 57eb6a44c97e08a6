"""``spark-collab generate``: sample text from a trained GPT run.

Thin entry point: check the flags, load the run's checkpoint and the tokenizer saved with its
token shards (training.lm_sample), print the prompt and its continuation. No Spark session is
needed: generation is one process on one device.

Examples::

    spark-collab generate --run runs/train/gpt_char
    spark-collab generate --run runs/train/gpt_char --prompt "ROMEO:" --max-new-tokens 300 --seed 7
    spark-collab generate --run runs/train/gpt_char --temperature 0   # greedy: the most likely token

Nothing here runs in Spark's Python workers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from spark_jobs.common.cli import HelpFormatter, run_cli
from spark_jobs.common.errors import JobInputError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spark-collab generate",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--run", required=True, help="run directory of a GPT training run (run.dir)")
    parser.add_argument("--prompt", default="", help="text to continue; empty: start a new document")
    parser.add_argument("--max-new-tokens", type=int, default=500, help="tokens to sample")
    parser.add_argument(
        "--temperature", type=float, default=0.8, help="softmax temperature; 0 picks the most likely token"
    )
    parser.add_argument(
        "--top-k", type=int, default=200, help="sample among the K most likely tokens (0: all)"
    )
    parser.add_argument("--seed", type=int, default=1337, help="seed of the sampling: same seed, same text")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    return parser


def _check(args: argparse.Namespace) -> None:
    if not Path(args.run).is_dir():
        raise JobInputError(f"--run {args.run}: no such directory; pass the run.dir of a GPT training run")
    if args.max_new_tokens < 1:
        raise JobInputError(f"--max-new-tokens {args.max_new_tokens}: must be >= 1")
    if args.temperature < 0:
        raise JobInputError(f"--temperature {args.temperature}: must be >= 0")
    if args.top_k < 0:
        raise JobInputError(f"--top-k {args.top_k}: must be >= 0 (0: no limit)")


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    _check(args)
    from contracts.tokenizer import TokenizerError
    from training.lm_sample import RunError, load_run, sample_text

    try:
        run = load_run(args.run, device=args.device)
    except (RunError, TokenizerError) as exc:
        raise JobInputError(str(exc)) from None
    try:
        text = sample_text(
            run,
            args.prompt,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k or None,
            seed=args.seed,
        )
    except TokenizerError as exc:
        raise JobInputError(f"--prompt: {exc}") from None
    print(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
