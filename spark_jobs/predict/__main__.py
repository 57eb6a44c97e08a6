"""``python -m spark_jobs.predict`` and ``spark-submit spark_jobs/predict/__main__.py``: the predict job."""

import sys

from spark_jobs.predict.cli import main

if __name__ == "__main__":
    sys.exit(main())
