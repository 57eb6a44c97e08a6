# spark-collab: every target sets itself up; `make demo` and `make test` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build by default (installs from the local wheel here). GPU users pick their build, e.g.
#   make setup TORCH_SPEC='torch==2.13.0' TORCH_PIP_ARGS='--index-url https://<your CUDA wheel index>'
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
SETUP_STAMP := $(VENV)/.setup-done
export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))

.PHONY: setup check-java jvm-cache demo test test-fast test-docs lint format bench-wordcount bench-loader bench-train bench-collab bench-lm-collab bench-session bench-gpt bench-predict bench-predict-lm bench-predict-cluster bench-corpus \
        cluster-up cluster-down cluster-status dist clean

setup: $(SETUP_STAMP)

check-java:
	@command -v java >/dev/null 2>&1 || { echo "error: java not found. PySpark 4 needs Java 17 or 21: apt-get install openjdk-17-jre-headless (or set JAVA_HOME)" >&2; exit 2; }
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1); \
	 if [ -z "$$v" ] || [ "$$v" -lt 17 ]; then echo "error: java $$v found, PySpark 4 needs Java 17 or 21: apt-get install openjdk-17-jre-headless" >&2; exit 2; fi

$(SETUP_STAMP): pyproject.toml | check-java
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

# The driver JVM's class-data-sharing archive: built once per java + pyspark (~30 s), it cuts
# every later Spark session start by about 40% (spark_jobs/common/jvm_cache.py). A no-op when present.
# `make test` builds it (the suite starts many JVMs); `make demo` does not (one session only).
jvm-cache: setup
	@$(PY) -m spark_jobs.common.jvm_cache

# Word count, sharding, data-parallel training and (when installed) a GPT, in one Spark session (spark_jobs/demo/job.py).
demo: setup
	$(PY) -m spark_jobs demo $(DEMO_ARGS)

test: jvm-cache
	$(PY) -m pytest -q --durations=30

test-fast: setup
	$(PY) -m pytest -q -m "not cluster and not distributed"

# Every command of docs/*.md, as written, in reading order (about an hour on 2 cores).
test-docs: jvm-cache
	SPARK_COLLAB_DOC_COMMANDS=1 $(PY) -m pytest -q tests/test_doc_commands.py

lint: setup
	$(VENV)/bin/ruff check .

format: setup
	$(VENV)/bin/ruff format .

bench-wordcount: setup
	$(PY) bench/wordcount.py $(BENCH_ARGS)

# Corpus job: nanoGPT's tinyshakespeare counts, tokenization vs one process, datatrove end to end (docs/benchmarks.md).
# Each job's whole process is timed, so its JVM starts as every spark-collab session does: with the archive.
bench-corpus: jvm-cache
	$(PY) bench/corpus.py $(BENCH_ARGS)

# Shard loading: our loader vs TorchDistributor's DataFrame loader vs a bare pyarrow floor (docs/benchmarks.md).
bench-loader: setup
	$(PY) bench/loader.py $(BENCH_ARGS)

# Training loop vs a plain PyTorch loop, launcher/train start-up vs bare torchrun (docs/benchmarks.md).
bench-train: setup
	@test -f runs/shards/mnist5k/manifest.json || $(PY) -m spark_jobs shard --source mnist5k --output runs/shards/mnist5k --shards 2
	$(PY) bench/train.py $(BENCH_ARGS)

# Paired comparison arms over seeds (DML vs independent; FedAvg IID vs non-IID vs centralized).
bench-collab: setup
	$(PY) bench/collab.py $(BENCH_ARGS)

# GPT peers: DDP, DiLoCo, FedAvg, codistillation, independent (needs ../shared/data/tinyshakespeare)
bench-lm-collab: setup
	$(PY) bench/lm_collab.py $(BENCH_ARGS)

# GPT: loop tokens/s vs a bare PyTorch loop, then the CPU config on tinyshakespeare (docs/benchmarks.md).
bench-gpt: setup
	$(PY) bench/gpt.py speed
	$(PY) bench/gpt.py learn

# predict on local[2] vs a single-process torch loop and a naive pandas_udf (needs ../shared/data/mnist).
bench-predict: setup
	$(PY) bench/predict.py $(BENCH_ARGS)

# GPT scoring of a 50 MB text corpus on local[2] vs single-process torch loops (needs ../shared/data).
bench-predict-lm: setup
	$(PY) bench/predict_lm.py $(BENCH_ARGS)

# predict with 1 and 2 one-core workers of a standalone cluster on this machine (needs ../shared/data/mnist).
bench-predict-cluster: setup
	$(PY) bench/predict_cluster.py $(BENCH_ARGS)

# Spark session start-up with and without the driver JVM's class-data-sharing archive.
bench-session: jvm-cache
	$(PY) bench/session.py $(BENCH_ARGS)

# Local Spark standalone cluster (docs/cluster.md): master + workers on 127.0.0.1 from the venv's pyspark.
CLUSTER_DIR ?= runs/cluster
CLUSTER_HOST ?= 127.0.0.1
CLUSTER_MASTER_PORT ?= 7077
CLUSTER_WEBUI_PORT ?= 8080
CLUSTER_WORKERS ?= 2
CLUSTER_WORKER_CORES ?= 1
CLUSTER_WORKER_MEMORY ?= 2g
CLUSTER_WORKER_WEBUI_PORT ?= 8081
CLUSTER_ENV = CLUSTER_DIR=$(CLUSTER_DIR) CLUSTER_HOST=$(CLUSTER_HOST) CLUSTER_MASTER_PORT=$(CLUSTER_MASTER_PORT) \
	CLUSTER_WEBUI_PORT=$(CLUSTER_WEBUI_PORT) CLUSTER_WORKERS=$(CLUSTER_WORKERS) \
	CLUSTER_WORKER_CORES=$(CLUSTER_WORKER_CORES) CLUSTER_WORKER_MEMORY=$(CLUSTER_WORKER_MEMORY) \
	CLUSTER_WORKER_WEBUI_PORT=$(CLUSTER_WORKER_WEBUI_PORT) PYTHON=$(abspath $(PY))

cluster-up: setup
	$(CLUSTER_ENV) bash scripts/cluster.sh up

cluster-down:
	$(CLUSTER_ENV) bash scripts/cluster.sh down

cluster-status:
	@$(CLUSTER_ENV) bash scripts/cluster.sh status

# --py-files archive of our packages for spark-submit; the submit lines are in docs/cluster.md.
dist: setup
	$(PY) scripts/make_dist.py --output dist/spark_collab.zip

clean:
	rm -rf runs build dist *.egg-info .pytest_cache
