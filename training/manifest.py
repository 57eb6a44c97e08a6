"""The shards manifest (``DIR/manifest.json``), readable without torch.

Split from :mod:`training.data` so that the driver can check a shards directory before it imports
torch (``spark-collab train`` checks paths first, then starts Spark and imports torch at once).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT = "spark-collab-shards"


def read_manifest(shards_dir: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``manifest.json`` of a shards directory (ValueError when absent or not ours)."""
    path = Path(shards_dir) / MANIFEST
    if not path.is_file():
        raise ValueError(f"{path}: no manifest; is {shards_dir} an output of `spark-collab shard`?")
    with path.open(encoding="utf-8") as fh:
        manifest = json.load(fh)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not a spark-collab shards manifest (format={manifest.get('format')!r})")
    return manifest
