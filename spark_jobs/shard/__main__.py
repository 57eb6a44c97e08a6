"""``python -m spark_jobs.shard ...`` and ``spark-submit spark_jobs/shard/__main__.py ...`` (driver only)."""

import sys

from spark_jobs.shard.cli import main

if __name__ == "__main__":
    sys.exit(main())
