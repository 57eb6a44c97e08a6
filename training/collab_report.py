"""What a collaborative run leaves behind, and the per-arm summary of a comparison.

Written by the driver from rank 0's result (so it works the same when rank 0 ran on another
machine): ``result.json``, ``metrics.jsonl`` (one line per epoch or round), ``accuracy.png``
(each peer / client and the fused model over time) and ``agreement.png`` (disagreement and mean
pairwise KL over time). No pyspark here; matplotlib with the Agg backend (no display needed).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from contracts.atomic import save_figure_atomic, write_bytes_atomic, write_text_atomic
from contracts.rundir import ACCURACY_PLOT, AGREEMENT_PLOT, METRICS, PEER_MODELS, RESULT


def step_key(result: Mapping[str, Any]) -> str:
    """``epoch`` for DML, ``round`` for FedAvg / local SGD."""
    return "epoch" if result["mode"] == "dml" else "round"


def progress_lines(result: Mapping[str, Any]) -> list[str]:
    """One readable line per epoch / round."""
    key = step_key(result)
    lines = []
    for rec in result["history"]:
        if key == "epoch":
            peers = " ".join(f"{a:.4f}" for a in rec["peer_acc"])
            lines.append(
                f"epoch {rec['epoch']:>3}  peers [{peers}]  ensemble {rec['ensemble_acc']:.4f}  "
                f"disagree {rec['disagreement']:.4f}  kl {rec['pairwise_kl']:.4f}"
            )
        else:
            lines.append(
                f"round {rec['round']:>3}  global {rec['global_acc']:.4f}  clients {rec['clients']}  "
                f"mean client {rec['mean_client_acc']:.4f}  disagree {rec['disagreement']:.4f}  "
                f"kl {rec['pairwise_kl']:.4f}  loss {rec['train_loss']:.4f}"
            )
    return lines


def summary_line(result: Mapping[str, Any]) -> str:
    final = result["final"]
    fused = final.get("fused_acc")
    fused_s = "n/a" if fused is None else f"{fused:.4f}"
    if result["mode"] == "dml":
        target = result.get("epoch_to_target")
        return (
            f"done: dml x{result['world_size']} peers {result['peers']} mean peer acc {final['mean_peer_acc']:.4f} "
            f"fused ({final['fusion']}) {fused_s} disagreement {final['disagreement']:.4f} "
            f"kl {final['pairwise_kl']:.4f} epoch to target {target}"
        )
    return (
        f"done: {result['mode']} x{result['world_size']} global acc {fused_s} after {final['round']} rounds; "
        f"round to target {result.get('round_to_target')}"
    )


def write_run(
    run_dir: str | Path, result: Mapping[str, Any], extra: Mapping[str, Any] | None = None
) -> list[Path]:
    """Write result.json, metrics.jsonl and the plots into ``run_dir``; returns the paths written."""
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {k: v for k, v in result.items() if k not in ("state", "peer_models")}
    doc.update(extra or {})
    peers = [_save_peer_models(out / PEER_MODELS, result["peer_models"])] if result.get("peer_models") else []
    write_text_atomic(out / RESULT, json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
    write_text_atomic(
        out / METRICS, "".join(json.dumps(rec, sort_keys=True) + "\n" for rec in result["history"])
    )
    return [out / RESULT, out / METRICS, *peers, *plot_run(out, result)]


def _save_peer_models(path: Path, document: Mapping[str, Any]) -> Path:
    """``peers.pt`` (torch's format: the parameters are tensors), written atomically."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(dict(document), buffer)
    return write_bytes_atomic(path, buffer.getvalue())


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    from matplotlib.ticker import MaxNLocator

    for ax in fig.axes:  # epochs and rounds are whole numbers
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    save_figure_atomic(fig, path)
    _pyplot().close(fig)
    return path


def plot_run(run_dir: Path, result: Mapping[str, Any]) -> list[Path]:
    """accuracy.png and agreement.png for one run."""
    plt = _pyplot()
    key = step_key(result)
    hist = result["history"]
    xs = [rec[key] for rec in hist]
    fig, ax = plt.subplots(figsize=(6, 4))
    if key == "epoch":
        for i, name in enumerate(result["peers"]):
            ax.plot(xs, [rec["peer_acc"][i] for rec in hist], marker=".", label=f"peer {i} ({name})")
        ax.plot(xs, [rec["ensemble_acc"] for rec in hist], marker="o", lw=2, color="black", label="ensemble")
    else:
        ax.plot(
            xs, [rec["mean_client_acc"] for rec in hist], marker=".", label="mean client (before averaging)"
        )
        ax.plot(
            xs,
            [rec["global_acc"] for rec in hist],
            marker="o",
            lw=2,
            color="black",
            label="global (averaged)",
        )
    ax.set_xlabel(key)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{result['mode']}: accuracy per {key}")
    ax.legend()
    fig.tight_layout()
    paths = [_save(fig, run_dir / ACCURACY_PLOT)]
    fig, (ax_d, ax_k) = plt.subplots(1, 2, figsize=(10, 4))
    ax_d.plot(xs, [rec["disagreement"] for rec in hist], marker="o")
    ax_d.set_xlabel(key)
    ax_d.set_ylabel("disagreement (fraction of test samples)")
    ax_k.plot(xs, [rec["pairwise_kl"] for rec in hist], marker="o", color="tab:red")
    ax_k.set_xlabel(key)
    ax_k.set_ylabel("mean pairwise KL (nats)")
    fig.suptitle("peers" if key == "epoch" else "clients' local models before averaging")
    fig.tight_layout()
    paths.append(_save(fig, run_dir / AGREEMENT_PLOT))
    return paths


# ----------------------------------------------------------------------------------------------
# Comparison: several seeds per arm
# ----------------------------------------------------------------------------------------------


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def _tail_mean(history: Sequence[Mapping[str, Any]], key: str, n: int = 3) -> float:
    tail = [rec[key] for rec in history[-n:]]
    return sum(tail) / len(tail)


def arm_metrics(result: Mapping[str, Any], at_round: int | None = None) -> dict[str, float]:
    """The numbers a comparison reports for one run of one arm."""
    final = result["final"]
    if result["mode"] == "dml":
        out = {
            "mean_peer_acc": final["mean_peer_acc"],
            "ensemble_acc": final["ensemble_acc"],
            "ensemble_gain": final["ensemble_acc"] - final["mean_peer_acc"],
            "disagreement": final["disagreement"],
            "pairwise_kl": final["pairwise_kl"],
            # The last epoch alone is one noisy SGD snapshot; the mean of the last three is steadier.
            "disagreement_last3": _tail_mean(result["history"], "disagreement"),
            "pairwise_kl_last3": _tail_mean(result["history"], "pairwise_kl"),
        }
        if result["world_size"] == 1:  # centralized: a single model
            out = {"acc": final["mean_peer_acc"]}
        return out
    hist = result["history"]
    out = {"acc": hist[-1]["global_acc"], "client_disagreement": hist[-1]["disagreement"]}
    if at_round is not None and 1 <= at_round <= len(hist):
        out[f"acc@{at_round}"] = hist[at_round - 1]["global_acc"]
    target = result.get("round_to_target")
    out["round_to_target"] = math.nan if target is None else float(target)
    return out


def summarize(arms: Mapping[str, Sequence[Mapping[str, Any]]], at_round: int | None = None) -> dict[str, Any]:
    """``{arm: {metric: {"mean", "std", "values"}}}`` over the arm's seeds."""
    table: dict[str, Any] = {}
    for arm, results in arms.items():
        per_metric: dict[str, list[float]] = {}
        for res in results:
            for k, v in arm_metrics(res, at_round).items():
                per_metric.setdefault(k, []).append(v)
        table[arm] = {}
        for k, vs in per_metric.items():
            finite = [v for v in vs if not math.isnan(v)]
            mean, std = mean_std(finite)
            table[arm][k] = {"mean": mean, "std": std, "values": vs, "n_finite": len(finite)}
    return table


def format_summary(table: Mapping[str, Any]) -> str:
    """A plain-text table: arm, metric, mean +- std, per-seed values."""
    lines = [f"{'arm':<26} {'metric':<20} {'mean':>8} {'± std':>8}  per seed"]
    for arm, metrics in table.items():
        for k, s in metrics.items():
            vals = " ".join("nan" if math.isnan(v) else f"{v:.4f}" for v in s["values"])
            lines.append(f"{arm:<26} {k:<20} {s['mean']:>8.4f} {s['std']:>8.4f}  {vals}")
    return "\n".join(lines)


def plot_compare(out_dir: Path, arms: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[Path]:
    """fedavg_partitions.png (mean global accuracy per round for each FedAvg arm, with the seeds'
    range shaded) and dml_vs_independent.png (disagreement per epoch)."""
    plt = _pyplot()
    paths = []
    fed = {a: rs for a, rs in arms.items() if rs and rs[0]["mode"] != "dml"}
    if fed:
        fig, ax = plt.subplots(figsize=(6, 4))
        for arm, rs in fed.items():
            rounds = [rec["round"] for rec in rs[0]["history"]]
            curves = [[rec["global_acc"] for rec in r["history"]] for r in rs]
            mean = [sum(c[i] for c in curves) / len(curves) for i in range(len(rounds))]
            lo = [min(c[i] for c in curves) for i in range(len(rounds))]
            hi = [max(c[i] for c in curves) for i in range(len(rounds))]
            ax.plot(rounds, mean, marker="o", label=arm)
            ax.fill_between(rounds, lo, hi, alpha=0.15)
        central = [r for a, rs in arms.items() if a.startswith("centralized") for r in rs]
        if central:
            acc = sum(r["final"]["mean_peer_acc"] for r in central) / len(central)
            ax.axhline(acc, color="black", ls="--", label="centralized (final)")
        ax.set_xlabel("round")
        ax.set_ylabel("global test accuracy")
        ax.set_title("FedAvg: IID vs non-IID shards")
        ax.legend()
        fig.tight_layout()
        paths.append(_save(fig, out_dir / "fedavg_partitions.png"))
    dml = {a: rs for a, rs in arms.items() if rs and rs[0]["mode"] == "dml" and rs[0]["world_size"] > 1}
    if dml:
        fig, (ax_d, ax_a) = plt.subplots(1, 2, figsize=(10, 4))
        for arm, rs in dml.items():
            epochs = [rec["epoch"] for rec in rs[0]["history"]]
            n = len(rs)
            ax_d.plot(
                epochs,
                [sum(r["history"][i]["disagreement"] for r in rs) / n for i in range(len(epochs))],
                marker="o",
                label=arm,
            )
            (line,) = ax_a.plot(
                epochs,
                [sum(r["history"][i]["mean_peer_acc"] for r in rs) / n for i in range(len(epochs))],
                marker="o",
                label=f"{arm}: mean peer",
            )
            ax_a.plot(
                epochs,
                [sum(r["history"][i]["ensemble_acc"] for r in rs) / n for i in range(len(epochs))],
                ls="--",
                color=line.get_color(),
                label=f"{arm}: ensemble",
            )
        ax_d.set_xlabel("epoch")
        ax_d.set_ylabel("peer disagreement")
        ax_a.set_xlabel("epoch")
        ax_a.set_ylabel("test accuracy")
        ax_d.legend()
        ax_a.legend()
        fig.tight_layout()
        paths.append(_save(fig, out_dir / "dml_vs_independent.png"))
    return paths
