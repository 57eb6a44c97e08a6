"""Exact and near-duplicate removal on DataFrames of documents (``doc_id``, ``text``, ...) or of their
keys (:mod:`spark_jobs.corpus.keys`, which the corpus job computes while reading).

- ``exact``: documents whose normalized text (lowercased, runs of Unicode whitespace made one space,
  ends stripped) has the same SHA-256 are one group; the smallest ``doc_id`` of each group stays.
- ``minhash``: signatures and band keys are computed in the workers (:mod:`spark_jobs.corpus.minhash`);
  documents sharing a band key are candidate pairs (all pairs of a bucket with at most
  :data:`MAX_BUCKET` members; in a larger bucket, which is mostly shared boilerplate, each member is
  paired with the bucket's smallest id only, so a bucket costs linear, not quadratic, work).
  A candidate pair is an edge when its estimated Jaccard similarity (the share of equal signature
  values, computed in the JVM) is at least the threshold. Connected components of the edges are found
  in Spark (:func:`connected_components`): in one executor task when the edges are few, else by
  iterative min-label propagation with pointer jumping across the cluster, until nothing changes;
  the label is the smallest ``doc_id`` of the component, the one representative that stays.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from spark_jobs.corpus.keys import DIGEST_DDL, digest_task
from spark_jobs.corpus.minhash import SIGNATURES_DDL, signature_task
from spark_jobs.corpus.options import MinHashOptions

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

MAX_BUCKET = 64
# Edge sets up to this size get their components in one executor task (two int64 arrays of this
# length and a few of the vertex count: well under 100 MB).
LOCAL_COMPONENT_EDGES = 2_000_000
# A bound on propagation rounds: with pointer jumping a component needs about log2 of its diameter.
MAX_ROUNDS = 200


def exact_groups(keyed: DataFrame) -> DataFrame:
    """One row per ``digest`` group of ``keyed`` (``doc_id, digest``): ``doc_id``, the group's
    smallest (the document that stays), and ``members``, the group's size."""
    from pyspark.sql import functions as F

    return keyed.groupBy("digest").agg(F.min("doc_id").alias("doc_id"), F.count("*").alias("members"))


def exact_duplicates_removed(docs: DataFrame) -> DataFrame:
    """``docs`` without exact duplicates (normalized text), keeping the smallest doc_id of each group."""
    keyed = docs.select("doc_id", "text").mapInArrow(digest_task, DIGEST_DDL)
    return docs.join(exact_groups(keyed).select("doc_id"), "doc_id", "left_semi")


def signatures(docs: DataFrame, options: MinHashOptions, seed: int) -> DataFrame:
    return docs.select("doc_id", "text").mapInArrow(signature_task(options, seed), SIGNATURES_DDL)


# Every pair of a bucket's sorted ids (src < dst), and the star of its smallest id.
_ALL_PAIRS = (
    "flatten(transform(sequence(1, size(ids) - 1), i -> "
    "transform(slice(ids, i + 1, size(ids) - i), b -> named_struct('src', ids[i - 1], 'dst', b))))"
)
_STAR = "transform(slice(ids, 2, size(ids) - 1), b -> named_struct('src', ids[0], 'dst', b))"


def candidate_pairs(sigs: DataFrame) -> DataFrame:
    """Distinct pairs ``(src < dst)`` of documents that share at least one band key.

    One shuffle of the (band, key, doc) rows gathers each bucket's ids; the pairs are then made
    from the buckets with two or more members, which are few."""
    from pyspark.sql import functions as F

    members = sigs.select("doc_id", F.posexplode("bands").alias("band", "key"))
    buckets = (
        members.groupBy("band", "key")
        .agg(F.array_sort(F.collect_list("doc_id")).alias("ids"))
        .where(F.size("ids") >= 2)
    )
    pairs = F.when(F.size("ids") <= MAX_BUCKET, F.expr(_ALL_PAIRS)).otherwise(F.expr(_STAR))
    return buckets.select(F.explode(pairs).alias("pair")).select("pair.src", "pair.dst").distinct()


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


def connected_components(edges: DataFrame, local_limit: int = LOCAL_COMPONENT_EDGES) -> DataFrame:
    """``id, label`` for every vertex of ``edges`` (``src``, ``dst``): label = smallest id of its component.

    Up to ``local_limit`` edges, one executor task finds them (:func:`component_task`): a round of
    distributed propagation costs several Spark jobs, and near-duplicate edge sets are usually small.
    Above it, distributed min-label propagation: each round, every vertex takes the smallest label among itself and its neighbours, and then
    the label of the vertex its label names (a pointer jump: that vertex is in the same component,
    and its label is never larger). The jump halves a long chain's distance to its smallest id in
    every round, so rounds grow with the logarithm of a component's diameter, not with it."""
    from pyspark.sql import functions as F

    if local_limit > 0 and edges.count() <= local_limit:
        return edges.select("src", "dst").coalesce(1).mapInArrow(component_task, "id long, label long")
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
        offered = labels.join(offers, "id", "left").select(
            "id",
            F.col("label").alias("before"),
            F.least("label", F.coalesce("offer", "label")).alias("label"),
        )
        named = labels.select(F.col("id").alias("named"), F.col("label").alias("named_label"))
        updated = (
            offered.join(named, offered.label == named.named, "left")
            .select(
                "id",
                "before",
                F.least("label", F.coalesce("named_label", "label")).alias("label"),
            )
            .withColumn("changed", F.col("label") < F.col("before"))
            .localCheckpoint()
        )
        labels = updated.select("id", "label")
        if not updated.where("changed").limit(1).count():
            return labels
    raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")


def component_labels(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(vertex ids, the smallest id of each one's component) of the edges ``src[i] - dst[i]``.

    Hooking and pointer jumping on arrays: vertices are numbered in id order, every vertex points
    at a vertex with a smaller or equal number, each round hooks the root of every edge's ends onto
    the smaller of their two roots and then jumps every pointer to its root. It stops when a round
    changes nothing: then both ends of every edge have one root, the smallest member of the tree."""
    ids, index = np.unique(np.concatenate([src, dst]), return_inverse=True)
    a, b = index[: len(src)], index[len(src) :]
    parent = np.arange(len(ids))
    while True:
        low = np.minimum(parent[a], parent[b])
        hooked = parent.copy()
        np.minimum.at(hooked, parent[a], low)
        np.minimum.at(hooked, parent[b], low)
        while True:
            jumped = hooked[hooked]
            if np.array_equal(jumped, hooked):
                break
            hooked = jumped
        if np.array_equal(hooked, parent):
            return ids, ids[parent]
        parent = hooked


def component_task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` over all edges in one partition: ``src, dst`` in, ``id, label`` out."""
    chunks = list(batches)
    src = np.concatenate([c.column(0).to_numpy() for c in chunks]) if chunks else np.empty(0, np.int64)
    dst = np.concatenate([c.column(1).to_numpy() for c in chunks]) if chunks else np.empty(0, np.int64)
    ids, labels = component_labels(src, dst)
    yield pa.RecordBatch.from_arrays([pa.array(ids), pa.array(labels)], names=["id", "label"])


def clusters_of_signatures(sigs: DataFrame, options: MinHashOptions) -> tuple[DataFrame, DataFrame]:
    """(edges ``src, dst, jaccard``, components ``id, label``) of the documents of ``sigs``
    (SIGNATURES_DDL)."""
    edges = similar_pairs(sigs, candidate_pairs(sigs), options.threshold, options.num_perm).localCheckpoint()
    return edges, connected_components(edges.select("src", "dst"))


def near_duplicate_clusters(
    docs: DataFrame, options: MinHashOptions, seed: int
) -> tuple[DataFrame, DataFrame]:
    """(edges ``src, dst, jaccard``, components ``id, label``) of the near duplicates in ``docs``."""
    return clusters_of_signatures(signatures(docs, options, seed).localCheckpoint(), options)


def near_duplicates(sigs: DataFrame, options: MinHashOptions) -> DataFrame:
    """``doc_id`` of every document of ``sigs`` that is in a near-duplicate cluster and is not its
    smallest id (the documents to remove)."""
    from pyspark.sql import functions as F

    _, components = clusters_of_signatures(sigs, options)
    return components.where(F.col("id") != F.col("label")).select(F.col("id").alias("doc_id"))
