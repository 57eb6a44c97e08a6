"""``python -m spark_jobs.demo ...`` and ``spark-submit spark_jobs/demo/__main__.py ...``."""

import sys

from spark_jobs.demo.job import main

if __name__ == "__main__":
    sys.exit(main())
