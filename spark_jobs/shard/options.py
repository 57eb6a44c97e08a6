"""The shard job's options as one typed :class:`ShardOptions`, and the parsing of their compact specs.

Everything here runs on the driver, before Spark starts: a bad option costs no JVM start-up.
Every error names the option as the user wrote it and says what to pass instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from spark_jobs.common.errors import JobInputError
from spark_jobs.shard.sources import TableOptions

SPLITS = ("train", "val", "test")
DEFAULT_SPLIT = "train=0.8,val=0.1,test=0.1"
# The seed feeds Spark's xxhash64 as a long literal.
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Partition:
    """How a partitioned split's rows are dealt to its shards."""

    name: str
    """iid, dirichlet or pathological."""
    alpha: float | None = None
    """Concentration of ``dirichlet:ALPHA``: small values give skewed class mixes."""
    k: int | None = None
    """Label blocks per shard of ``pathological:K``."""

    @property
    def spec(self) -> str:
        """The ``--partition`` text that parses back to this partition."""
        if self.alpha is not None:
            return f"{self.name}:{self.alpha}"
        if self.k is not None:
            return f"{self.name}:{self.k}"
        return self.name

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.alpha is not None:
            out["alpha"] = self.alpha
        if self.k is not None:
            out["k"] = self.k
        return out


@dataclass(frozen=True)
class Normalization:
    """What happens to features after ``--scale``: nothing, the train split's mean/std, or given ones."""

    mode: str
    """none, global or explicit."""
    mean: float | None = None
    std: float | None = None


@dataclass(frozen=True)
class ShardOptions:
    """Everything that decides the shards; the same options and source give the same bytes.

    ``--describe``/``--plot`` (a different mode) and the Spark options (the session's business)
    are not shard options and stay on the command line.
    """

    output: str
    """Directory that receives the splits and manifest.json (a local path or file: URI)."""
    source: str = "mnist5k"
    """Data set spec: mnist5k, digits, idx:..., csv:PATH or parquet:PATH (see sources.py)."""
    shards: int = 2
    """Shards of each split in ``partition_splits`` (one per training rank)."""
    partition: Partition = Partition("iid")
    fractions: Mapping[str, float] = field(default_factory=lambda: parse_fractions(DEFAULT_SPLIT))
    """Split name -> share of every class, in train/val/test order, each > 0, summing to 1."""
    partition_splits: tuple[str, ...] = ("train",)
    """Splits cut into ``shards`` shards; the others get one shard."""
    seed: int = 0
    scale: float | None = None
    """Divisor applied to raw feature values; None: the source's own (255 for pixels, ...)."""
    normalize: Normalization = Normalization("none")
    num_classes: int | None = None
    """None: 10 for image sources, max label + 1 for tables."""
    table: TableOptions = field(default_factory=TableOptions)
    """Column mapping of csv:/parquet: sources."""
    feature_shape: tuple[int, ...] | None = None
    """Per-sample shape recorded in the manifest; None: the source's."""
    overwrite: bool = False
    given: frozenset[str] = frozenset()
    """Names of options (``shards``, ``partition``, ``partition_splits``) the user set explicitly:
    one that would have no effect is refused only if it was asked for, not for its default."""
    texts: Mapping[str, str] = field(default_factory=dict, compare=False)
    """Option texts as the user wrote them (``split``, ``partition``, ...), quoted verbatim in errors."""

    def __post_init__(self) -> None:
        # Options built in Python get the same checks (and messages) as the command line's.
        check_counts(self.shards, self.num_classes)
        object.__setattr__(self, "fractions", parse_fractions(self.text("split")))
        parse_partition(self.text("partition"))
        parse_partition_splits(self.text("partition_splits"))
        check_normalization(self.normalize, self.text("normalize"))
        parse_feature_shape(self.text("feature_shape"))
        check_table_options(self.table)
        check_seed(self.seed)
        check_scale(self.scale, self.text("scale"))

    def text(self, option: str) -> str:
        """The option as the user wrote it, else rendered from its value (so that it parses back)."""
        if option in self.texts:
            return self.texts[option]
        if option == "split":
            return ",".join(f"{name}={fraction}" for name, fraction in self.fractions.items())
        if option == "partition":
            return self.partition.spec
        if option == "partition_splits":
            return ",".join(self.partition_splits)
        if option == "feature_shape":
            return "x".join(map(str, self.feature_shape or ()))
        if option == "scale":
            return "auto" if self.scale is None else str(self.scale)
        if option == "normalize":
            norm = self.normalize
            if norm.mode == "explicit" and norm.mean is not None and norm.std is not None:
                return f"{norm.mean},{norm.std}"
            return norm.mode
        raise KeyError(option)


def check_counts(shards: int, num_classes: int | None) -> None:
    if shards < 1:
        raise JobInputError(f"--shards {shards}: must be at least 1")
    if num_classes is not None and num_classes < 1:
        raise JobInputError(f"--num-classes {num_classes}: must be at least 1")


def check_table_options(table: TableOptions) -> None:
    if table.features_col and table.feature_cols:
        raise JobInputError("--features-col and --feature-cols: pass one of them")


def check_seed(seed: int) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise JobInputError(f"--seed {seed}: must be between 0 and 2**63-1, e.g. --seed 0")


def parse_partition(text: str) -> Partition:
    name, _, arg = text.partition(":")
    if name == "iid" and not arg:
        return Partition("iid")
    if name == "dirichlet":
        try:
            alpha = float(arg)
        except ValueError:
            raise JobInputError(
                f"--partition {text}: expected dirichlet:ALPHA with a number, e.g. dirichlet:0.5"
            ) from None
        if not alpha > 0 or not math.isfinite(alpha):
            raise JobInputError(f"--partition {text}: dirichlet alpha must be > 0, e.g. dirichlet:0.5")
        return Partition("dirichlet", alpha=alpha)
    if name == "pathological":
        if not arg.isdigit() or int(arg) < 1:
            raise JobInputError(
                f"--partition {text}: expected pathological:K with K >= 1 blocks per shard, e.g. pathological:2"
            )
        return Partition("pathological", k=int(arg))
    raise JobInputError(
        f"--partition {text}: unknown partitioner; use iid, dirichlet:ALPHA or pathological:K"
    )


def parse_partition_splits(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    for name in names:
        if name not in SPLITS:
            raise JobInputError(f"--partition-splits {text}: unknown split {name!r}; use {', '.join(SPLITS)}")
    return names


def parse_fractions(text: str) -> dict[str, float]:
    """``train=0.8,val=0.1,test=0.1`` -> ordered dict of positive fractions summing to 1."""
    fractions: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or name not in SPLITS:
            raise JobInputError(
                f"--split {text}: expected NAME=FRACTION with NAME in {'/'.join(SPLITS)}, e.g. train=0.8,val=0.1,test=0.1"
            )
        if name in fractions:
            raise JobInputError(f"--split {text}: {name} given twice")
        try:
            fraction = float(value)
        except ValueError:
            raise JobInputError(f"--split {text}: {value!r} is not a number") from None
        if not 0 <= fraction <= 1:
            raise JobInputError(f"--split {text}: fraction {name}={value} must be between 0 and 1")
        fractions[name] = fraction
    total = sum(fractions.values())
    if abs(total - 1) > 1e-6:
        raise JobInputError(f"--split {text}: fractions sum to {total:g}, they must sum to 1")
    return {name: fractions[name] for name in SPLITS if fractions.get(name, 0) > 0}


def parse_scale(text: str) -> float | None:
    """``--scale``: None for auto (the source decides), 1.0 for none, else a positive divisor."""
    if text == "auto":
        return None
    if text == "none":
        return 1.0
    try:
        value = float(text)
    except ValueError:
        raise JobInputError(f"--scale {text}: expected auto, none or a positive number such as 255") from None
    check_scale(value, text)
    return value


def check_scale(value: float | None, text: str) -> None:
    if value is not None and (not value > 0 or not math.isfinite(value)):
        raise JobInputError(f"--scale {text}: the divisor must be a positive number")


def parse_normalize(text: str) -> Normalization:
    if text in {"none", "global"}:
        return Normalization(text)
    try:
        mean, std = (float(x) for x in text.split(","))
    except ValueError:
        raise JobInputError(
            f"--normalize {text}: expected none, global or MEAN,STD such as 0.1307,0.3081"
        ) from None
    normalization = Normalization("explicit", mean, std)
    check_normalization(normalization, text)
    return normalization


def check_normalization(normalization: Normalization, text: str) -> None:
    if normalization.mode not in {"none", "global", "explicit"}:
        raise JobInputError(f"--normalize {text}: expected none, global or MEAN,STD such as 0.1307,0.3081")
    if normalization.mode == "explicit" and (
        normalization.mean is None or normalization.std is None or not normalization.std > 0
    ):
        raise JobInputError(f"--normalize {text}: STD must be > 0")


def parse_feature_shape(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        shape = tuple(int(x) for x in text.lower().split("x"))
    except ValueError:
        raise JobInputError(f"--feature-shape {text}: expected dimensions like 28x28") from None
    if any(d <= 0 for d in shape):
        raise JobInputError(f"--feature-shape {text}: dimensions must be positive")
    return shape


def check_options_used(options: ShardOptions, num_classes: int | None) -> None:
    """Refuse options that would have no effect: shards or a partitioner for splits that --split does
    not make, and a pathological K larger than the number of classes (None: not known yet)."""
    fractions = options.fractions
    absent = [name for name in options.partition_splits if name not in fractions]
    if "partition_splits" in options.given and absent:
        raise JobInputError(
            f"--partition-splits {options.text('partition_splits')}: --split {options.text('split')} makes "
            f"no {absent[0]!r} split; name splits it makes ({', '.join(fractions)})"
        )
    if not any(name in fractions for name in options.partition_splits):
        given_values: Sequence[tuple[str, str, str]] = (
            ("shards", "--shards", str(options.shards)),
            ("partition", "--partition", options.text("partition")),
        )
        for name, flag, value in given_values:
            if name in options.given:
                raise JobInputError(
                    f"{flag} {value}: applies to the splits in --partition-splits "
                    f"({options.text('partition_splits')}), and --split {options.text('split')} makes none "
                    f"of them; drop {flag}, or add --partition-splits with a split that --split makes"
                )
    k = options.partition.k
    if k is not None and num_classes is not None and k > num_classes:
        raise JobInputError(
            f"--partition {options.text('partition')}: K is the number of label blocks per shard and must "
            f"be <= the number of classes ({num_classes}); use pathological:{num_classes} or less"
        )
