"""``spark-collab demo``: the platform end to end on data that ships with the installation.

``job.py`` runs the steps in one Spark session; ``text.py`` is the demo's text (the Python
documentation that CPython ships in ``pydoc_data.topics``), also read by ``wordcount --demo``.
"""

from spark_jobs.demo.job import main

__all__ = ["main"]
