"""The language-model tokenizers (contracts.tokenizer) against plain-Python references; no Spark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.tokenizer import (
    EOT,
    BpeTokenizer,
    CharTokenizer,
    TokenizerError,
    WordTokenizer,
    load_tokenizer,
)
from contracts.wordsplit import cjk_tokens, words_tokens

SAMPLE = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
    "Héllo wörld — naïve café; 中文分词 😀 tabs\tand  double  spaces\r\n"
) * 20
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)


def test_char_is_the_sorted_set_of_characters() -> None:
    tok = CharTokenizer.train([SAMPLE[:500], SAMPLE[500:]])
    assert tok.chars == sorted(set(SAMPLE))
    assert tok.eot_id == len(set(SAMPLE)) and tok.vocab_size == len(set(SAMPLE)) + 1
    ids = tok.encode(SAMPLE)
    stoi = {c: i for i, c in enumerate(sorted(set(SAMPLE)))}  # nanoGPT's prepare.py mapping
    assert ids == [stoi[c] for c in SAMPLE]
    assert tok.decode([*ids, tok.eot_id]) == SAMPLE
    with pytest.raises(TokenizerError, match="'Z' is not in the vocabulary"):
        tok.encode("Z")


@settings(max_examples=60, deadline=None)
@given(TEXT)
def test_char_round_trips(text: str) -> None:
    tok = CharTokenizer.train([text])
    assert tok.decode(tok.encode(text)) == text


@pytest.fixture(scope="module")
def bpe() -> BpeTokenizer:
    return BpeTokenizer.train(iter([SAMPLE.splitlines()]), 300)


@settings(max_examples=60, deadline=None)
@given(TEXT)
def test_bpe_round_trips_any_text(bpe: BpeTokenizer, text: str) -> None:
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_trains_the_asked_size_and_is_deterministic(bpe: BpeTokenizer) -> None:
    again = BpeTokenizer.train(iter([SAMPLE.splitlines()]), 300)
    assert bpe.vocab_size == 300 and bpe.eot_id == 0
    assert again.to_json() == bpe.to_json() and again.sha256() == bpe.sha256()
    assert bpe.encode_batch(["speak", "hear me"]) == [bpe.encode("speak"), bpe.encode("hear me")]
    # Merges were learned: common words take fewer ids than bytes.
    assert len(bpe.encode("Speak, speak.")) < len(b"Speak, speak.")


def test_words_keeps_the_most_frequent_words_and_maps_the_rest_to_unk() -> None:
    counts = Counter(words_tokens(SAMPLE))
    top = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5]]
    tok = WordTokenizer(top, "words")
    assert tok.vocab_size == 7 and tok.eot_id == 1
    expected = [top.index(w) + 2 if w in top else 0 for w in words_tokens(SAMPLE)]
    assert tok.encode(SAMPLE) == expected
    assert tok.decode([top.index("speak") + 2, 0, 1]) == "speak <unk>"


def test_words_cjk_split_and_decode() -> None:
    text = "红楼梦是中国古典小说"
    pieces = cjk_tokens(text)
    tok = WordTokenizer(pieces, "cjk")
    assert tok.decode(tok.encode(text)) == "".join(pieces) == text


@pytest.mark.parametrize("kind", ["char", "words", "bpe"])
def test_save_and_load_give_the_same_tokenizer(tmp_path, bpe: BpeTokenizer, kind: str) -> None:
    made = {
        "char": CharTokenizer.train([SAMPLE]),
        "words": WordTokenizer(["speak", "all"], "whitespace"),
        "bpe": bpe,
    }[kind]
    path = made.save(tmp_path)
    assert path.name == "tokenizer.json"
    loaded = load_tokenizer(tmp_path)
    assert loaded.kind == kind and loaded.sha256() == made.sha256()
    assert loaded.encode(SAMPLE) == made.encode(SAMPLE) and loaded.eot_id == made.eot_id
    assert load_tokenizer(path).vocab_size == made.vocab_size


def test_bpe_file_is_the_libraries_own(tmp_path, bpe: BpeTokenizer) -> None:
    import tokenizers

    bpe.save(tmp_path)
    backend = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert backend.token_to_id(EOT) == bpe.eot_id
    assert backend.encode("hear me speak").ids == bpe.encode("hear me speak")


def test_bad_tokenizer_files_are_named(tmp_path) -> None:
    with pytest.raises(TokenizerError, match="no tokenizer"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"format": "spark-collab-tokenizer", "kind": "x"}))
    with pytest.raises(TokenizerError, match="unknown tokenizer kind 'x'"):
        load_tokenizer(tmp_path)


FORK_CHILD = """
import os, sys
from contracts.tokenizer import BpeTokenizer
os.environ["TOKENIZERS_PARALLELISM"] = "true"
tok = BpeTokenizer.train(iter([["hear me speak, all of you"] * 2000]), 300)
texts = ["hear me speak"] * 20000
parent = tok.encode_batch(texts)  # the Rust pool is now in use in this process
pid = os.fork()
if pid == 0:
    # Spark's workers are forked like this. With parallelism left "true" the child would wait forever
    # on the parent's pool; the corpus job's worker entry point switches it off first.
    from spark_jobs.corpus.workers import worker_tokenizer

    child = worker_tokenizer(tok.to_json()).encode_batch(texts)
    os._exit(0 if child == parent and os.environ["TOKENIZERS_PARALLELISM"] == "false" else 3)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_bpe_encodes_in_a_forked_child_after_the_parent_used_its_thread_pool() -> None:
    done = subprocess.run([sys.executable, "-c", FORK_CHILD], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_end_of_document_text_inside_a_document_stays_text(bpe: BpeTokenizer) -> None:
    """A document quoting ``<|endoftext|>`` must not get an end-of-document id (a boundary inside it)."""
    text = "before <|endoftext|> after<|endoftext|>"
    for ids in (bpe.encode(text), bpe.encode_batch([text])[0]):
        assert bpe.eot_id not in ids
        assert bpe.decode(ids) == text
