"""Build ``dist/spark_collab.zip``: the ``contracts``, ``spark_jobs`` and ``training`` packages for ``spark-submit --py-files``.

Only ``.py`` sources go in (no ``__pycache__``), in sorted order with a fixed timestamp, so the same
sources always give the same archive (executors cache ``--py-files`` by content on some managers).
Third-party dependencies (pyspark, torch, pyarrow, ...) are not included: the cluster's Python must
have them, or ship a packed environment with ``--archives`` (see docs/cluster.md).
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("contracts", "spark_jobs", "training")
FIXED_TIME = (2020, 1, 1, 0, 0, 0)


def build(output: Path) -> list[str]:
    """Write the archive and return the member names."""
    names: list[str] = []
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for package in PACKAGES:
            for path in sorted((ROOT / package).rglob("*.py")):
                if "__pycache__" in path.parts:
                    continue
                name = path.relative_to(ROOT).as_posix()
                info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, path.read_bytes())
                names.append(name)
    tmp.replace(output)  # never leave a half-written archive under the real name
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--output", type=Path, default=ROOT / "dist" / "spark_collab.zip", help="archive path"
    )
    args = parser.parse_args(argv)
    names = build(args.output)
    print(f"wrote {args.output} ({len(names)} modules from {', '.join(PACKAGES)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
