"""``python -m spark_jobs.collab ...`` and ``spark-submit spark_jobs/collab/__main__.py ...``."""

import sys

from spark_jobs.collab.job import main

if __name__ == "__main__":
    sys.exit(main())
