"""What every job's driver shares: the command-line plumbing (``cli``), the Spark session
(``session``), staged outputs (``output``) and output locks (``locks``), checks before launch
(``preflight``), error types and exit codes (``errors``), the JVM class-data archive
(``jvm_cache``) and wording helpers. Driver only: nothing here runs in Spark's Python workers.
"""
