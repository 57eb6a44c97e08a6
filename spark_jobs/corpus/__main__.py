"""``python -m spark_jobs.corpus ...`` and ``spark-submit spark_jobs/corpus/__main__.py ...``."""

import sys

from spark_jobs.corpus.cli import main

if __name__ == "__main__":
    sys.exit(main())
