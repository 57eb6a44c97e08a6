"""Near-duplicate detection against an exact Jaccard reference on a corpus with planted duplicates."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from spark_jobs.corpus.dedup import connected_components, exact_duplicates_removed, near_duplicate_clusters
from spark_jobs.corpus.options import MinHashOptions

NGRAM, THRESHOLD = 3, 0.7


def _sentence(rng: random.Random, vocab: list[str]) -> str:
    return " ".join(rng.choice(vocab) for _ in range(rng.randint(10, 16))) + "."


def planted_corpus(seed: int = 7) -> list[str]:
    """Random documents plus edited copies, sentence-reordered copies and boilerplate-sharing documents."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(3000)]
    base = [[_sentence(rng, vocab) for _ in range(rng.randint(8, 12))] for _ in range(240)]
    docs = [" ".join(s) for s in base]
    for sentences in base[:40]:  # small edits: a few words replaced, inserted or deleted
        words = " ".join(sentences).split()
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(words))
            op = rng.choice("rid")
            if op == "r":
                words[at] = rng.choice(vocab)
            elif op == "i":
                words.insert(at, rng.choice(vocab))
            else:
                del words[at]
        docs.append(" ".join(words))
    for sentences in base[40:70]:  # the same sentences in another order
        docs.append(" ".join(rng.sample(sentences, len(sentences))))
    boilerplate = " ".join(_sentence(rng, vocab) for _ in range(3))
    for _ in range(30):  # distinct documents that share a header and a footer
        body = " ".join(_sentence(rng, vocab) for _ in range(8))
        docs.append(f"{boilerplate} {body} {boilerplate}")
    docs += [docs[5], docs[250].upper()]  # exact duplicates (after normalization)
    return docs


def shingles(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + NGRAM]) for i in range(max(len(words) - NGRAM + 1, 1))}


def reference_pairs(docs: list[str]) -> set[tuple[int, int]]:
    sets = [shingles(d) for d in docs]
    return {
        (i, j)
        for i, j in itertools.combinations(range(len(docs)), 2)
        if len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= THRESHOLD
    }


def union_find_labels(pairs: set[tuple[int, int]]) -> dict[int, int]:
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in parent}


@pytest.fixture(scope="module")
def corpus(spark):
    docs = planted_corpus()
    frame = spark.createDataFrame(list(enumerate(docs)), "doc_id long, text string")
    return docs, frame


def test_minhash_finds_the_planted_near_duplicates(corpus) -> None:
    docs, frame = corpus
    options = MinHashOptions(threshold=THRESHOLD, ngram=NGRAM, bands=20, rows=6)
    edges, components = near_duplicate_clusters(frame, options, seed=0)
    found = {(r["src"], r["dst"]) for r in edges.collect()}
    truth = reference_pairs(docs)
    assert len(truth) >= 70  # the planted edits and reorders are near duplicates by the reference
    recall = len(found & truth) / len(truth)
    precision = len(found & truth) / len(found)
    print(
        f"minhash pairs: reference {len(truth)}, found {len(found)}, recall {recall:.3f}, precision {precision:.3f}"
    )
    assert recall >= 0.9 and precision >= 0.9
    # No boilerplate-only pair is taken for a duplicate.
    shared = range(len(docs) - 32, len(docs) - 2)
    assert not {(a, b) for a, b in found if a in shared and b in shared}
    # Components are those of the found edges, labelled by their smallest id (Python union-find).
    labels = {r["id"]: r["label"] for r in components.collect()}
    assert labels == union_find_labels(found)
    # The distributed label propagation (used above the one-task size limit) finds the same.
    distributed = connected_components(edges.select("src", "dst"), local_limit=0)
    assert {r["id"]: r["label"] for r in distributed.collect()} == labels


@pytest.mark.parametrize("local_limit", [0, 10_000])
def test_components_of_a_long_chain_and_a_star(spark, local_limit: int) -> None:
    # A path whose ids fall along it (the smallest id at the far end) and a star: one label each.
    path = [(1000 - i, 999 - i) for i in range(300)]
    star = [(5000, 5001 + i) for i in range(50)]
    edges = spark.createDataFrame(path + star, "src long, dst long")
    labels = {r["id"]: r["label"] for r in connected_components(edges, local_limit=local_limit).collect()}
    assert labels == {**{v: 700 for v in range(700, 1001)}, **{v: 5000 for v in range(5000, 5051)}}


def test_exact_dedup_keeps_the_first_of_each_normalized_text(corpus) -> None:
    docs, frame = corpus
    kept = sorted(r["doc_id"] for r in exact_duplicates_removed(frame).collect())
    normalized = [" ".join(d.lower().split()) for d in docs]
    expected = sorted({t: i for i, t in reversed(list(enumerate(normalized)))}.values())
    assert kept == expected and len(docs) - len(kept) == 2
