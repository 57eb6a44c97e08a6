"""``spark-collab shard --describe DIR [--plot PNG]``: what is in a shards directory (reads the manifest only).

Runs on the driver alone, without Spark.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spark_jobs.common.errors import JobInputError


def load_manifest(shards_dir: str | Path) -> dict[str, Any]:
    path = Path(shards_dir) / "manifest.json"
    if not path.is_file():
        raise JobInputError(
            f"--describe {shards_dir}: no manifest.json; is it an output of `spark-collab shard`?"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise JobInputError(f"--describe {path}: not valid JSON ({exc})") from None


def _ordered_splits(manifest: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    # The manifest is written with sorted keys; show splits in pipeline order instead.
    rank = {"train": 0, "val": 1, "test": 2}
    return sorted(manifest["splits"].items(), key=lambda item: (rank.get(item[0], 3), item[0]))


def format_table(manifest: dict[str, Any]) -> str:
    """One line per shard: split, index, rows, share of the split, class histogram."""
    classes = manifest["num_classes"]
    header = f"{'split':<6} {'shard':>5} {'rows':>7} {'share':>6}  label histogram (classes 0..{classes - 1})"
    partition = manifest["partition"]
    lines = [
        f"source {manifest['source']['spec']}  rows {manifest['source']['rows']}  seed {manifest['seed']}  "
        f"partition {partition['name']}{':' + str(partition.get('alpha', partition.get('k'))) if partition['name'] != 'iid' else ''}"
        f"  classes {classes}  feature_shape {'x'.join(map(str, manifest['feature_shape']))}",
        header,
    ]
    for name, split in _ordered_splits(manifest):
        for shard in split["shards"]:
            share = shard["rows"] / split["rows"] if split["rows"] else 0.0
            hist = " ".join(f"{x:>4}" for x in shard["label_histogram"])
            lines.append(f"{name:<6} {shard['index']:>5} {shard['rows']:>7} {share:>6.1%}  {hist}")
        dist = split.get("distance_to_pooled", {})
        lines.append(
            f"{name:<6} {'all':>5} {split['rows']:>7} {'':>6}  mean TV {dist.get('mean_tv', 0):.3f}  mean JS {dist.get('mean_js', 0):.3f}"
        )
    return "\n".join(lines)


def plot(manifest: dict[str, Any], png: str | Path) -> None:
    """Stacked bars: rows per shard, coloured by class, one panel per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    splits = dict(_ordered_splits(manifest))
    fig, axes = plt.subplots(1, len(splits), figsize=(4 + 2.5 * len(splits), 4), squeeze=False)
    cmap = plt.get_cmap("tab10" if manifest["num_classes"] <= 10 else "tab20")
    for ax, (name, split) in zip(axes[0], splits.items(), strict=True):
        hists = np.array([s["label_histogram"] for s in split["shards"]], dtype=float)
        bottom = np.zeros(len(hists))
        for c in range(hists.shape[1]):
            ax.bar(range(len(hists)), hists[:, c], bottom=bottom, color=cmap(c % cmap.N), label=str(c))
            bottom += hists[:, c]
        ax.set_xticks(range(len(hists)))
        ax.set_title(f"{name} ({split['rows']} rows)")
        ax.set_xlabel("shard")
        ax.set_ylabel("rows")
    axes[0][-1].legend(title="class", fontsize="small", bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.suptitle(f"{manifest['source']['spec']}: label distribution per shard")
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)


def describe(shards_dir: str | Path, png: str | Path | None = None) -> int:
    manifest = load_manifest(shards_dir)
    print(format_table(manifest))
    if png:
        plot(manifest, png)
        print(f"wrote {png}")
    return 0
