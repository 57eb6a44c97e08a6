"""``spark-collab corpus --describe DIR``: counts from the manifest, document lengths from the shard indexes.

Reads only ``manifest.json`` and the ``.idx`` files (8 bytes a document), never the tokens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contracts.atomic import save_figure_atomic
from contracts.manifest import Manifest, ManifestError
from contracts.tokens import OFFSET_DTYPE
from spark_jobs.common.errors import JobInputError

SPLIT_ORDER = ("train", "val")


def document_lengths(manifest: Manifest, root: Path, split: str) -> np.ndarray:
    """Tokens per document (end-of-document token included) over every shard of ``split``."""
    lengths = [
        np.diff(np.fromfile(root / entry["index_path"], dtype=OFFSET_DTYPE))
        for entry in manifest.shards(split)
    ]
    return np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)


def format_summary(manifest: Manifest, lengths: dict[str, np.ndarray]) -> str:
    tok = manifest.get("tokenizer", {})
    counts = manifest.get("documents", {})
    lines = [
        f"source {manifest.source.get('docs')} x {len(manifest.source.get('inputs', []))} input file(s)  "
        f"seed {manifest.seed}  tokenizer {tok.get('spec')} (vocab {manifest.get('vocab_size')}, "
        f"{manifest.get('token_dtype')}, sha256 {str(tok.get('sha256'))[:12]})",
        "documents: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()),
        f"{'split':<6} {'shard':>5} {'documents':>10} {'tokens':>12}",
    ]
    for split in (s for s in SPLIT_ORDER if manifest.has_split(s)):
        for entry in manifest.shards(split):
            lines.append(f"{split:<6} {entry['index']:>5} {entry['documents']:>10} {entry['rows']:>12}")
        found = lengths[split]
        lines.append(
            f"{split:<6} {'all':>5} {len(found):>10} {manifest.rows(split):>12}  tokens/document: "
            f"min {found.min()} median {int(np.median(found))} mean {found.mean():.1f} max {found.max()}"
        )
    return "\n".join(lines)


def plot_lengths(lengths: dict[str, np.ndarray], title: str, png: Path) -> None:
    """Histogram of document lengths in tokens, one series per split, log-spaced bins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = max(int(v.max()) for v in lengths.values() if len(v))
    bins = np.unique(np.geomspace(1, top + 1, num=50).astype(np.int64))
    fig, ax = plt.subplots(figsize=(7, 4))
    for split, values in lengths.items():
        ax.hist(values, bins=bins, alpha=0.6, label=f"{split} ({len(values)} documents)")
    ax.set_xscale("log")
    ax.set_xlabel("document length (tokens, end-of-document included)")
    ax.set_ylabel("documents")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    save_figure_atomic(fig, png)
    plt.close(fig)


def describe(shards_dir: str | Path, png: str | Path | None = None) -> int:
    root = Path(shards_dir)
    try:
        manifest = Manifest.read(root, kind="tokens")
        lengths = {s: document_lengths(manifest, root, s) for s in SPLIT_ORDER if manifest.has_split(s)}
    except (ManifestError, OSError) as exc:
        raise JobInputError(f"--describe {shards_dir}: {exc}") from None
    print(format_summary(manifest, lengths))
    target = Path(png) if png else root / "doc_lengths.png"
    plot_lengths(
        lengths, f"{root.name}: document lengths ({manifest.get('tokenizer', {}).get('spec')})", target
    )
    print(f"wrote {target}")
    return 0
