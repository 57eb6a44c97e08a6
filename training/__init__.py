"""Rank-side code of spark-collab: runs inside each torch process and never imports pyspark."""
