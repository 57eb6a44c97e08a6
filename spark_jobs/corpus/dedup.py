"""Exact and near-duplicate removal on DataFrames of documents (``doc_id``, ``text``, ...).

- ``exact``: documents whose normalized text (lowercased, trimmed, runs of Unicode whitespace made
  one space) has the same SHA-256 are one group; the smallest ``doc_id`` of each group stays.
- ``minhash``: signatures and band keys are computed in the workers (:mod:`spark_jobs.corpus.minhash`);
  documents sharing a band key are candidate pairs (all pairs of a bucket with at most
  :data:`MAX_BUCKET` members; in a larger bucket, which is mostly shared boilerplate, each member is
  paired with the bucket's smallest id only, so a bucket costs linear, not quadratic, work).
  A candidate pair is an edge when its estimated Jaccard similarity (the share of equal signature
  values, computed in the JVM) is at least the threshold. Connected components of the edges are found
  by iterative min-label propagation on DataFrames: every vertex takes the smallest label among itself
  and its neighbours until nothing changes; the label is then the smallest ``doc_id`` of the
  component, the one representative that stays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spark_jobs.corpus.minhash import SIGNATURES_DDL, signature_task
from spark_jobs.corpus.options import MinHashOptions

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

MAX_BUCKET = 64
# Propagation rounds between lineage cuts; a component needs about as many rounds as its diameter.
MAX_ROUNDS = 200


def _normalized(text: Column) -> Column:
    from pyspark.sql import functions as F

    return F.regexp_replace(F.trim(F.lower(text)), r"(?U)\s+", " ")


def exact_duplicates_removed(docs: DataFrame) -> DataFrame:
    """``docs`` without exact duplicates (normalized text), keeping the smallest doc_id of each group."""
    from pyspark.sql import functions as F

    keyed = docs.select("doc_id", F.sha2(_normalized(F.col("text")), 256).alias("digest"))
    keep = keyed.groupBy("digest").agg(F.min("doc_id").alias("doc_id")).select("doc_id")
    return docs.join(keep, "doc_id", "left_semi")


def signatures(docs: DataFrame, options: MinHashOptions, seed: int) -> DataFrame:
    return docs.select("doc_id", "text").mapInArrow(signature_task(options, seed), SIGNATURES_DDL)


def candidate_pairs(sigs: DataFrame) -> DataFrame:
    """Distinct pairs ``(src < dst)`` of documents that share at least one band key."""
    from pyspark.sql import functions as F

    members = sigs.select("doc_id", F.posexplode("bands").alias("band", "key"))
    sizes = members.groupBy("band", "key").agg(F.count("*").alias("n"), F.min("doc_id").alias("first"))
    shared = members.join(sizes.where(F.col("n") >= 2), ["band", "key"])
    small = shared.where(F.col("n") <= MAX_BUCKET).select("band", "key", "doc_id")
    all_pairs = (
        small.alias("a")
        .join(small.alias("b"), ["band", "key"])
        .where(F.col("a.doc_id") < F.col("b.doc_id"))
        .select(F.col("a.doc_id").alias("src"), F.col("b.doc_id").alias("dst"))
    )
    star = shared.where((F.col("n") > MAX_BUCKET) & (F.col("doc_id") != F.col("first"))).select(
        F.col("first").alias("src"), F.col("doc_id").alias("dst")
    )
    return all_pairs.unionByName(star).distinct()


def similar_pairs(sigs: DataFrame, pairs: DataFrame, threshold: float, num_perm: int) -> DataFrame:
    """Candidate pairs whose estimated Jaccard similarity is at least ``threshold``, with ``jaccard``."""
    from pyspark.sql import functions as F

    left = sigs.select(F.col("doc_id").alias("src"), F.col("sig").alias("sig_a"))
    right = sigs.select(F.col("doc_id").alias("dst"), F.col("sig").alias("sig_b"))
    equal = F.aggregate(
        F.zip_with("sig_a", "sig_b", lambda x, y: F.when(x == y, 1).otherwise(0)),
        F.lit(0),
        lambda acc, v: acc + v,
    )
    scored = (
        pairs.join(left, "src").join(right, "dst").select("src", "dst", (equal / num_perm).alias("jaccard"))
    )
    return scored.where(F.col("jaccard") >= threshold)


def connected_components(edges: DataFrame) -> DataFrame:
    """``id, label`` for every vertex of ``edges`` (``src``, ``dst``): label = smallest id of its component."""
    from pyspark.sql import functions as F

    both = edges.select("src", "dst").unionByName(
        edges.select(F.col("dst").alias("src"), F.col("src").alias("dst"))
    )
    both = both.localCheckpoint()
    labels = (
        both.select(F.col("src").alias("id")).distinct().withColumn("label", F.col("id")).localCheckpoint()
    )
    for _ in range(MAX_ROUNDS):
        offers = (
            both.join(labels, both.src == labels.id)
            .groupBy(F.col("dst").alias("id"))
            .agg(F.min("label").alias("offer"))
        )
        updated = (
            labels.join(offers, "id", "left")
            .select(
                "id",
                F.least("label", F.coalesce("offer", "label")).alias("label"),
                F.coalesce(F.col("offer") < F.col("label"), F.lit(False)).alias("changed"),
            )
            .localCheckpoint()
        )
        labels = updated.select("id", "label")
        if not updated.where("changed").limit(1).count():
            return labels
    raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")


def near_duplicate_clusters(
    docs: DataFrame, options: MinHashOptions, seed: int
) -> tuple[DataFrame, DataFrame]:
    """(edges ``src, dst, jaccard``, components ``id, label``) of the near duplicates in ``docs``."""
    sigs = signatures(docs, options, seed).localCheckpoint()
    edges = similar_pairs(sigs, candidate_pairs(sigs), options.threshold, options.num_perm).localCheckpoint()
    return edges, connected_components(edges.select("src", "dst"))


def near_duplicates_removed(docs: DataFrame, options: MinHashOptions, seed: int) -> DataFrame:
    """``docs`` with every near-duplicate cluster reduced to its smallest doc_id."""
    from pyspark.sql import functions as F

    _, components = near_duplicate_clusters(docs, options, seed)
    removed = components.where(F.col("id") != F.col("label")).select(F.col("id").alias("doc_id"))
    return docs.join(removed, "doc_id", "left_anti")
