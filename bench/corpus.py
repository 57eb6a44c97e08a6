"""Corpus job benchmark: nanoGPT's tinyshakespeare counts, tokenization efficiency, datatrove end to end.

    python bench/corpus.py --mb 50            # needs ../shared/data; datatrove only if installed

1. tinyshakespeare with ``char``: symbols and characters as nanoGPT's ``prepare.py`` computes them
   (written out here in plain Python), against the job's output; its 90/10 cut by position against
   the job's cut by document (``--docs paragraph --val 0.1``).
2. A JSONL corpus of ``--mb`` MB built from the shared texts: documents of 20 sentences drawn at
   random from every text, 5% of their words replaced, plus 5% near copies (two words edited) and 2%
   exact copies. Generated once per size under runs/bench/corpus-jsonl.
3. Tokenization alone (``bpe:8192``): the job's executor stage on ``local[2]`` (documents already
   read and cached, workers started, their piece memory empty) against one process running
   ``tokenizers``' ``encode_batch`` over the same texts with every core; and, for reference, the
   job's piece-by-piece encoding in one thread of one process.
4. End to end (``bpe:8192``, ``exact,minhash``, ``local[2]``) against datatrove's local executor
   with 2 workers: its exact dedup stages (on the job's normalized text), its MinHash stages (the
   same 5-gram shingles as ours, 20 bands x 6 hashes) and its ``DocumentTokenizer`` with the
   tokenizer our run trained (datatrove trains none). Two like-for-like comparisons follow:
   datatrove writing its deduplicated documents, a BPE trained on them with ``tokenizers`` (the
   job's settings, one process, every core) and its tokenizer stage (both sides train); and the job
   again, handed the tokenizer of the first run (``--tokenizer file:PATH``; neither side trains).
   Each runs in its own process; peak RSS of the driver, the JVM and the Python workers is sampled
   from /proc.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

SHARED = REPO_ROOT.parent / "shared" / "data"
TEXTS = [
    "tinyshakespeare/input.txt",
    "gutenberg-moby-dick/2701-0.txt",
    "gutenberg-pride-and-prejudice/1342-0.txt",
    "chinese-classics/hongloumeng.txt",
    "chinese-classics/sanguoyanyi.txt",
]
MB = 1_000_000
CORES = 2
PEERS = {"BigCode Spark dedup": (0.4, 0.4), "NeMo Curator CPU filtering": (0.3, 1.4)}


# ---------------------------------------------------------------- corpus


def build_corpus(mb: int, root: Path, files: int = 16, seed: int = 0) -> Path:
    out = root / f"corpus-jsonl-{mb}mb"
    if (out / "_done").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    sentences: list[str] = []
    for name in TEXTS:
        text = (SHARED / name).read_text(encoding="utf-8-sig").replace("\r\n", "\n")
        sentences += [s.strip() for s in re.split(r"(?<=[.!?。！？])\s+", text) if len(s.strip()) > 20]
    vocab = sorted({w for s in sentences[:20000] for w in s.split()})
    handles = [(out / f"part-{i:03d}.jsonl").open("w", encoding="utf-8") for i in range(files)]
    written, docs, n = 0, [], 0
    while written < mb * MB:
        roll = rng.random()
        if docs and roll < 0.02:
            text = rng.choice(docs)
        elif docs and roll < 0.07:
            words = rng.choice(docs).split(" ")
            for _ in range(2):
                words[rng.randrange(len(words))] = rng.choice(vocab)
            text = " ".join(words)
        else:
            words = " ".join(rng.choice(sentences) for _ in range(20)).split(" ")
            text = " ".join(rng.choice(vocab) if rng.random() < 0.05 else w for w in words)
        if len(docs) < 5000:
            docs.append(text)
        else:
            docs[rng.randrange(5000)] = text
        line = json.dumps({"id": n, "text": text}, ensure_ascii=False) + "\n"
        handles[n % files].write(line)
        written += len(line.encode("utf-8"))
        n += 1
    for handle in handles:
        handle.close()
    (out / "_done").write_text(str(n))
    return out


def corpus_texts(root: Path) -> list[str]:
    return [
        json.loads(line)["text"] for f in sorted(root.glob("*.jsonl")) for line in f.open(encoding="utf-8")
    ]


# ---------------------------------------------------------------- peak RSS of a process tree


class TreeRss:
    """Samples VmRSS of a process and its descendants; peaks per role (driver, jvm, workers)."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid, self.interval = pid, interval
        self.peak = {"driver": 0, "jvm": 0, "worker_max": 0, "workers_sum": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _children() -> dict[int, list[int]]:
        tree: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                tree.setdefault(ppid, []).append(int(entry))
        return tree

    @staticmethod
    def _rss(pid: int) -> tuple[int, str]:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return 0, ""
        found = re.search(r"VmRSS:\s+(\d+) kB", status)
        return (int(found.group(1)) * 1024 if found else 0), cmd

    def _run(self) -> None:
        while not self._stop.is_set():
            tree, stack, workers = self._children(), [self.pid], []
            while stack:
                pid = stack.pop()
                stack += tree.get(pid, [])
                rss, cmd = self._rss(pid)
                if pid == self.pid:
                    self.peak["driver"] = max(self.peak["driver"], rss)
                elif "java" in cmd.split(" ")[0]:
                    self.peak["jvm"] = max(self.peak["jvm"], rss)
                else:
                    workers.append(rss)
            if workers:
                self.peak["worker_max"] = max(self.peak["worker_max"], max(workers))
                self.peak["workers_sum"] = max(self.peak["workers_sum"], sum(workers))
            self._stop.wait(self.interval)


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, dict[str, int], str]:
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    with TreeRss(proc.pid) as rss:
        output, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed ({proc.returncode}):\n{output[-3000:]}")
    return time.perf_counter() - started, rss.peak, output


# ---------------------------------------------------------------- 1. tinyshakespeare


def tinyshakespeare(work: Path) -> dict:
    from contracts.manifest import Manifest
    from spark_jobs.corpus.cli import main

    path = SHARED / "tinyshakespeare" / "input.txt"
    data = path.read_text(encoding="utf-8")
    chars = sorted(set(data))  # nanoGPT data/shakespeare_char/prepare.py
    n = len(data)
    nano = {
        "symbols": len(chars),
        "chars": n,
        "train": len(data[: int(n * 0.9)]),
        "val": len(data[int(n * 0.9) :]),
    }
    spark = [
        "--master",
        "local[2]",
        "--conf",
        "spark.ui.enabled=false",
        "--conf",
        "spark.ui.showConsoleProgress=false",
    ]
    whole, paragraphs = work / "ts-file", work / "ts-paragraph"
    assert main([str(path), "--output", str(whole), "--val", "0", "--overwrite", *spark]) == 0
    assert main([str(path), "--output", str(paragraphs), "--docs", "paragraph", "--overwrite", *spark]) == 0
    m_whole, m_par = Manifest.read(whole), Manifest.read(paragraphs)
    ours = {
        "symbols": m_whole.get("vocab_size") - 1,  # minus the end-of-document id
        "chars": m_whole.rows("train") - m_whole.split("train")["documents"],
        "paragraph_docs": m_par.get("documents")["kept"],
        "paragraph_train_tokens": m_par.rows("train"),
        "paragraph_val_tokens": m_par.rows("val"),
        "paragraph_train_docs": m_par.split("train")["documents"],
        "paragraph_val_docs": m_par.split("val")["documents"],
    }
    print(f"tinyshakespeare nanoGPT prepare.py: {nano}")
    print(f"tinyshakespeare corpus job:         {ours}")
    return {"nanogpt": nano, "ours": ours}


# ---------------------------------------------------------------- 3. tokenization alone


def tokenization(corpus: Path, tokenizer_json: Path) -> dict:
    import numpy as np

    from contracts.tokenizer import load_tokenizer
    from spark_jobs.common.session import get_spark_session
    from spark_jobs.corpus.documents import input_errors
    from spark_jobs.corpus.job import read_documents
    from spark_jobs.corpus.options import CorpusOptions, DocSpec
    from spark_jobs.corpus.workers import TOKENS_DDL, encode_task

    texts = corpus_texts(corpus)
    size = sum(len(t.encode("utf-8")) for t in texts)
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    tok = load_tokenizer(tokenizer_json)
    started = time.perf_counter()
    single = sum(len(ids) for ids in tok.encode_batch(texts))
    one_process = time.perf_counter() - started
    # For reference: the job's own piece-by-piece encoding (one thread), in this process, from an
    # empty piece memory, in the job's batches of 1,000 documents.
    pieces = load_tokenizer(tokenizer_json)
    started = time.perf_counter()
    for i in range(0, len(texts), 1000):
        pieces.encode_batch_bytes(texts[i : i + 1000], np.dtype("<u2"))
    pieces_one_thread = time.perf_counter() - started
    del texts, pieces

    spark = get_spark_session(
        "bench-corpus",
        master=f"local[{CORES}]",
        conf={
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.sql.shuffle.partitions": "4",
        },
    )
    with input_errors():
        docs = read_documents(
            spark,
            [str(p) for p in sorted(corpus.glob("*.jsonl"))],
            CorpusOptions(docs=DocSpec("jsonl", "text")),
        )
        docs = docs.select("doc_id", "text").cache()
        docs.count()
    from pyspark.sql import functions as F

    # Warm-up: the workers start and parse a tokenizer. Its JSON differs from the measured one's by
    # a trailing newline, so each worker parses the measured one anew and its piece memory
    # (contracts.bpe_pieces) starts empty, as in a job.
    warm = spark.sparkContext.broadcast(tok.to_json() + "\n")
    docs.mapInArrow(encode_task(warm, "uint16"), TOKENS_DDL).agg(F.sum("n_tokens")).collect()
    broadcast = spark.sparkContext.broadcast(tok.to_json())
    encoded = docs.mapInArrow(encode_task(broadcast, "uint16"), TOKENS_DDL)
    started = time.perf_counter()
    total = encoded.agg(F.sum("n_tokens")).collect()[0][0]
    spark_s = time.perf_counter() - started
    docs.unpersist()
    spark.stop()
    n_docs = total - single  # each document adds one end-of-document id
    result = {
        "mb": size / MB,
        "one_process_s": one_process,
        "spark_s": spark_s,
        "ratio": one_process / spark_s,
        "pieces_one_thread_s": pieces_one_thread,
        "tokens": single,
        "documents": n_docs,
    }
    print(
        f"tokenization {size / MB:.1f} MB bpe:8192: one process encode_batch {one_process:.2f} s "
        f"({size / MB / one_process:.2f} MB/s), Spark local[{CORES}] {spark_s:.2f} s "
        f"({size / MB / spark_s:.2f} MB/s) -> {one_process / spark_s:.2f}x of one process; the job's "
        f"piece-by-piece encoding in one thread {pieces_one_thread:.2f} s ({size / MB / pieces_one_thread:.2f} MB/s)"
    )
    return result


# ---------------------------------------------------------------- 4. end to end


DATATROVE_SCRIPT = r"""
import sys
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig, ExactDedupFilter, ExactDedupSignature, ExactFindDedups
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.tokens import DocumentTokenizer
from datatrove.utils.word_tokenizers import WordTokenizer

class Words(WordTokenizer):
    # The corpus job's shingle words (lowercase \w+), so both sides hash the same 5-grams.
    def word_tokenize(self, text):
        import re  # the class is shipped to datatrove's worker processes by value, without globals
        return re.findall(r"\w+", text.lower())
    def sent_tokenize(self, text):
        return [text]
    def span_tokenize(self, text):
        return [(0, len(text))]

corpus, work, tokenizer = sys.argv[1:4]
config = MinhashConfig(n_grams=5, num_buckets=20, hashes_per_bucket=6)
kw = dict(logging_dir=f"{work}/logs", skip_completed=False)
exact_stages = len(sys.argv) > 4 and sys.argv[4] == "exact"

def read():
    return JsonlReader(corpus, glob_pattern="*.jsonl")

def exact_filter():
    return [ExactDedupFilter(f"{work}/exact_dups", config=exact)] if exact_stages else []

if exact_stages:
    def normalized(doc) -> str:
        # The corpus job's exact key: lowercased, trimmed, runs of whitespace made one space.
        import re
        return re.sub(r"\s+", " ", doc.text.lower()).strip()
    exact = ExactDedupConfig(content_getter=normalized)
    LocalPipelineExecutor([read(), ExactDedupSignature(f"{work}/exact_sigs", config=exact)], tasks=2, workers=2, **kw).run()
    LocalPipelineExecutor([ExactFindDedups(f"{work}/exact_sigs", f"{work}/exact_dups", config=exact)], tasks=1, workers=1, **kw).run()
LocalPipelineExecutor([read(), *exact_filter(), MinhashDedupSignature(f"{work}/sigs", config=config, language=Words())], tasks=2, workers=2, **kw).run()
LocalPipelineExecutor([MinhashDedupBuckets(f"{work}/sigs", f"{work}/buckets", config=config)], tasks=config.num_buckets, workers=2, **kw).run()
LocalPipelineExecutor([MinhashDedupCluster(f"{work}/buckets", f"{work}/remove", config=config)], tasks=1, workers=1, **kw).run()
if not tokenizer.startswith("train:"):
    LocalPipelineExecutor([read(), *exact_filter(), MinhashDedupFilter(f"{work}/remove"), DocumentTokenizer(f"{work}/tokens", tokenizer_name_or_path=tokenizer, eos_token="<|endoftext|>")], tasks=2, workers=2, **kw).run()
    sys.exit(0)

# datatrove trains no tokenizer. Its user writes the deduplicated documents out, trains a byte-level
# BPE on them with the tokenizers library (the job's settings: ByteLevel pre-tokenizer without a prefix
# space, the end-of-document token, the byte alphabet) in one process with every core, then tokenizes.
import json, os
from datatrove.pipeline.writers import JsonlWriter
LocalPipelineExecutor([read(), *exact_filter(), MinhashDedupFilter(f"{work}/remove"), JsonlWriter(f"{work}/deduped", compression=None)], tasks=2, workers=2, **kw).run()

def batches():
    batch = []
    for path in sorted(os.listdir(f"{work}/deduped")):
        with open(f"{work}/deduped/{path}", encoding="utf-8") as lines:
            for line in lines:
                batch.append(json.loads(line)["text"])
                if len(batch) == 1024:
                    yield batch
                    batch = []
    if batch:
        yield batch

os.environ["TOKENIZERS_PARALLELISM"] = "true"
import tokenizers as tk
bpe = tk.Tokenizer(tk.models.BPE())
bpe.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
bpe.decoder = tk.decoders.ByteLevel()
trainer = tk.trainers.BpeTrainer(vocab_size=int(tokenizer.split(":")[1]), special_tokens=["<|endoftext|>"], initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
bpe.train_from_iterator(batches(), trainer=trainer)
bpe.save(f"{work}/tokenizer.json")
os.environ["TOKENIZERS_PARALLELISM"] = "false"
LocalPipelineExecutor([JsonlReader(f"{work}/deduped"), DocumentTokenizer(f"{work}/tokens", tokenizer_name_or_path=f"{work}/tokenizer.json", eos_token="<|endoftext|>")], tasks=2, workers=2, **kw).run()
"""


def corpus_command(corpus: Path, out: Path, tokenizer: str) -> list[str]:
    """The job as the bench runs it: JSONL documents, exact and MinHash dedup, 2 shards, local[2]."""
    cmd = [sys.executable, "-m", "spark_jobs", "corpus", str(corpus), "--output", str(out), "--overwrite"]
    cmd += ["--docs", "jsonl:text", "--tokenizer", tokenizer, "--dedup", "exact,minhash", "--shards", "2"]
    quiet = ["--conf", "spark.ui.enabled=false", "--conf", "spark.ui.showConsoleProgress=false"]
    return [*cmd, "--master", f"local[{CORES}]", *quiet]


def end_to_end(corpus: Path, work: Path, skip: set[str]) -> dict:
    size = sum(p.stat().st_size for p in corpus.glob("*.jsonl"))
    out = work / "e2e"
    cmd = corpus_command(corpus, out, "bpe:8192")
    result: dict = {"mb": size / MB}
    if "ours" not in skip:
        ours_s, ours_rss, output = run_measured(cmd)
        print("\n".join(output.strip().splitlines()[-2:]))
        manifest = json.loads((out / "manifest.json").read_text())
        result.update(ours_s=ours_s, ours_rss=ours_rss, documents=manifest["documents"])
        print(
            f"end to end {size / MB:.1f} MB: corpus job {ours_s:.1f} s "
            f"({size / MB / ours_s / CORES:.3f} MB/s/core), peak RSS {_rss_text(ours_rss)}"
        )
    if "datatrove" in skip:
        return result
    try:
        import datatrove  # noqa: F401
    except ImportError:
        # Its MinHash and readers also need regex, orjson and an xxhash before 4 (xxhash 4 refuses to
        # hash str, which datatrove 0.10 passes it).
        print(
            "datatrove: not installed (pip install datatrove regex orjson 'xxhash<4' into the venv to compare)"
        )
        return result
    what = "exact + minhash + tokenize, tokenizer given"
    dt_s = _datatrove_leg(corpus, work / "datatrove", str(out / "tokenizer.json"), result, "datatrove", what)
    if "ours_s" in result:
        result["ratio"] = dt_s / result["ours_s"]
        print(f"corpus job is {result['ratio']:.2f}x datatrove end to end")
    if "trained" not in skip:
        # datatrove with the BPE trained on its own output, so that both sides train their tokenizer.
        what = "exact + minhash, BPE trained with tokenizers on its output, tokenize"
        trained_s = _datatrove_leg(
            corpus, work / "datatrove-trained", "train:8192", result, "datatrove_trained", what
        )
        if "ours_s" in result:
            result["trained_ratio"] = trained_s / result["ours_s"]
            print(f"corpus job is {result['trained_ratio']:.2f}x datatrove end to end, both training the BPE")
    if "given" in skip or not (out / "tokenizer.json").is_file():
        return result
    # The same pipeline handed the same tokenizer, as datatrove is (it trains none): the job with
    # --tokenizer file:PATH, into its own output.
    given = corpus_command(corpus, work / "e2e-given", f"file:{out / 'tokenizer.json'}")
    given_s, given_rss, output = run_measured(given)
    print("\n".join(output.strip().splitlines()[-2:]))
    result.update(given_s=given_s, given_rss=given_rss, given_ratio=dt_s / given_s)
    print(
        f"end to end, tokenizer given to both: corpus job {given_s:.1f} s "
        f"({size / MB / given_s / CORES:.3f} MB/s/core), peak RSS {_rss_text(given_rss)}; "
        f"{dt_s / given_s:.2f}x datatrove"
    )
    return result


def _datatrove_leg(corpus: Path, dt_work: Path, tokenizer: str, result: dict, key: str, what: str) -> float:
    """DATATROVE_SCRIPT in its own process (``tokenizer``: a tokenizer.json, or ``train:V``), its
    exact dedup stages included so that both sides run the same stages; time and peak RSS go into
    ``result`` under ``key``."""
    subprocess.run(["rm", "-rf", str(dt_work)], check=True)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-c", DATATROVE_SCRIPT, str(corpus), str(dt_work), tokenizer, "exact"]
    seconds, peak, _ = run_measured(cmd, env)
    result.update({f"{key}_s": seconds, f"{key}_rss": peak})
    print(
        f"end to end datatrove ({what}): {seconds:.1f} s "
        f"({result['mb'] / seconds / CORES:.3f} MB/s/core), peak RSS {_rss_text(peak)}"
    )
    return seconds


def _rss_text(peak: dict[str, int]) -> str:
    return ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in peak.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--mb", type=int, default=50, help="size of the generated JSONL corpus")
    parser.add_argument("--work", default=str(REPO_ROOT / "runs" / "bench"), help="corpus cache and outputs")
    parser.add_argument(
        "--skip",
        default="",
        help="comma list of parts to skip: shakespeare,ours,datatrove,trained,given,tokenize",
    )
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"{SHARED} not present: this benchmark needs the shared texts")
        return 1
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    skip = set(args.skip.split(","))
    report: dict = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "cores": CORES, "mb": args.mb}
    if "shakespeare" not in skip:
        report["tinyshakespeare"] = tinyshakespeare(work)
    corpus = build_corpus(args.mb, work)
    report["end_to_end"] = end_to_end(corpus, work, skip)
    if "tokenize" not in skip:
        tokenizer_json = work / "e2e" / "tokenizer.json"
        report["tokenization"] = tokenization(corpus, tokenizer_json)
    for peer, (low, high) in PEERS.items():
        print(f"published: {peer} {low}-{high} MB/s per vCPU")
    (work / f"corpus-{args.mb}mb.json").write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
