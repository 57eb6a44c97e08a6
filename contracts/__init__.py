"""Typed contracts shared by the driver side (``spark_jobs``) and the rank side (``training``).

Nothing in this package imports pyspark or torch: both sides, Spark's Python workers and plain
scripts can import it cheaply. It defines the facts that cross the process boundary once:

- :mod:`contracts.atomic`: writing files so that readers never see half of one;
- :mod:`contracts.rundir`: the names of the files in a training run directory;
- :mod:`contracts.manifest`: the ``manifest.json`` of a shards directory (image or token shards);
- :mod:`contracts.tokens`: the on-disk layout of token shards.
"""
