"""``python -m spark_jobs.train ...`` and ``spark-submit spark_jobs/train/__main__.py ...``."""

import sys

from spark_jobs.train.job import main

if __name__ == "__main__":
    sys.exit(main())
