"""Driver-side jobs of spark-collab: everything that imports pyspark lives here."""
