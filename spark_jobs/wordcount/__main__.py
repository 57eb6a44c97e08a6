"""``python -m spark_jobs.wordcount ...`` and ``spark-submit spark_jobs/wordcount/__main__.py ...``."""

import sys

from spark_jobs.wordcount.cli import main

if __name__ == "__main__":
    sys.exit(main())
