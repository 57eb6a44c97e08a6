"""The word count job: text files to a (word, count) table (``spark-collab wordcount``).

Typed API: ``count_words(spark, WordCountOptions(output=..., inputs=[...]))`` returns a
:class:`WordCountResult`; command line: :func:`main`.

Driver: ``options``, ``job``, ``cli``, and ``inputs`` except its ``read_split``. Spark's Python
workers: the map and reduce functions of ``engines``, ``combiner``, ``block_count``, ``tokenizers``
and ``inputs.read_split``.
"""

from spark_jobs.wordcount.cli import main
from spark_jobs.wordcount.inputs import byte_splits, resolve_inputs
from spark_jobs.wordcount.job import WordCountResult, count_files, count_words, prepared_inputs
from spark_jobs.wordcount.options import WordCountOptions

__all__ = [
    "WordCountOptions",
    "WordCountResult",
    "byte_splits",
    "count_files",
    "count_words",
    "main",
    "prepared_inputs",
    "resolve_inputs",
]
