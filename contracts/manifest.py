"""The ``manifest.json`` of a shards directory: one type, one reader, one writer.

Both kinds of shards share it:

- ``kind = "images"``: Parquet shards of ``spark-collab shard`` (``id``, ``label``, ``features``);
- ``kind = "tokens"``: flat token-id shards of ``spark-collab corpus`` (see :mod:`contracts.tokens`).

On disk it is a JSON object; the keys this module knows are typed fields, and the rest of what a
job records (scaling, partition details, the tokenizer, dedup counts...) is kept in ``extra`` and
written back unchanged. Only ``split -> shards`` is interpreted here: counting shards and rows of a
split happens in :meth:`Manifest.num_shards` and :meth:`Manifest.rows`, nowhere else.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contracts.atomic import write_json_atomic

MANIFEST = "manifest.json"
FORMAT = "spark-collab-shards"
VERSION = 1
KINDS = ("images", "tokens")


class ManifestError(ValueError):
    """A missing, foreign or malformed manifest; the message names the file and what to do."""


@dataclass
class Manifest:
    """A parsed ``manifest.json``. ``splits[name]["shards"]`` lists the split's shards in order."""

    kind: str
    splits: dict[str, dict[str, Any]]
    source: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = VERSION
    path: Path | None = None
    """Where it was read from (None for one built in memory)."""

    # ---------------------------------------------------------------- queries

    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else MANIFEST

    def has_split(self, split: str) -> bool:
        return split in self.splits

    def split(self, split: str) -> dict[str, Any]:
        """The split's entry; ManifestError naming the splits there are when it is absent."""
        if split not in self.splits:
            raise ManifestError(f"{self.where}: no split {split!r}; it has {sorted(self.splits)}")
        return self.splits[split]

    def shards(self, split: str) -> list[dict[str, Any]]:
        return list(self.split(split).get("shards", []))

    def num_shards(self, split: str) -> int:
        """How many shards ``split`` has; 0 when the split is absent or received no rows."""
        return len(self.splits.get(split, {}).get("shards", []))

    def rows(self, split: str) -> int:
        """Rows (image shards) or tokens (token shards) of ``split``; 0 when absent."""
        return int(sum(int(s.get("rows", 0)) for s in self.splits.get(split, {}).get("shards", [])))

    def shard(self, split: str, index: int) -> dict[str, Any]:
        shards = self.shards(split)
        if not 0 <= index < len(shards):
            raise ManifestError(f"{self.where}: split {split!r} has {len(shards)} shards, no shard {index}")
        return shards[index]

    def get(self, key: str, default: Any = None) -> Any:
        """A kind-specific key (``num_classes``, ``feature_shape``, ``vocab_size``...)."""
        return self.extra.get(key, default)

    def __getitem__(self, key: str) -> Any:
        """Dict-style access to the on-disk document (``manifest["splits"]``, ``manifest["num_classes"]``)."""
        return self.to_dict()[key]

    # ---------------------------------------------------------------- (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "format": FORMAT,
            "version": self.version,
            "kind": self.kind,
            "source": self.source,
            "seed": self.seed,
            "splits": self.splits,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any], path: Path | None = None) -> Manifest:
        where = str(path) if path is not None else MANIFEST
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            fmt = doc.get("format") if isinstance(doc, dict) else None
            raise ManifestError(f"{where}: not a spark-collab shards manifest (format={fmt!r})")
        version = doc.get("version")
        if version != VERSION:
            raise ManifestError(
                f"{where}: manifest version {version!r}, this spark-collab reads version {VERSION}; "
                "re-create the shards with this version"
            )
        kind = doc.get("kind", "images")  # manifests written before token shards existed
        if kind not in KINDS:
            raise ManifestError(f"{where}: unknown shards kind {kind!r}; expected one of {', '.join(KINDS)}")
        splits = doc.get("splits")
        if not isinstance(splits, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("shards", []), list) for v in splits.values()
        ):
            raise ManifestError(f"{where}: malformed 'splits'; re-create the shards")
        known = {"format", "version", "kind", "source", "seed", "splits"}
        return cls(
            kind=kind,
            splits=splits,
            source=doc.get("source", {}),
            seed=int(doc.get("seed", 0)),
            extra={k: v for k, v in doc.items() if k not in known},
            version=version,
            path=path,
        )

    @classmethod
    def read(cls, shards_dir: str | os.PathLike, kind: str | None = None) -> Manifest:
        """The manifest of ``shards_dir``; ``kind`` (when given) must match."""
        path = Path(shards_dir) / MANIFEST
        if not path.is_file():
            raise ManifestError(
                f"{path}: no manifest; is {shards_dir} an output of `spark-collab shard` or `corpus`?"
            )
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{path}: unreadable manifest ({exc}); re-create the shards") from None
        manifest = cls.from_dict(doc, path)
        if kind is not None and manifest.kind != kind:
            job = "corpus" if kind == "tokens" else "shard"
            raise ManifestError(
                f"{path}: holds {manifest.kind} shards, this needs {kind} shards (from `spark-collab {job}`)"
            )
        return manifest

    def write(self, shards_dir: str | os.PathLike) -> Path:
        """Write ``DIR/manifest.json`` atomically (stable bytes: sorted keys)."""
        return write_json_atomic(Path(shards_dir) / MANIFEST, self.to_dict())
