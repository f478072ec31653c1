# Two entry points: `make demo` and `make test` (`make unit`: the fast inner loop). Both install what they need:
#   .venv/            the project and its dev tools (reinstalled when pyproject.toml changes)
#   ~/.cache/streamproc/vllm-venv-HASH   the vLLM server (once per requirements/vllm-server.txt)
#   ~/.cache/streamproc/models/KIND-HASH the model directory (once per scripts/prepare_model.py)
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# smollm2 (default), tiny, or a model directory of your own
MODEL ?= smollm2
# Packs with the embedding_probe scorer read the first LAYERS layers of MODEL, served by a
# second vLLM in pooling mode (scripts/prepare_model.sh backbone; `make sweep-depth` measures
# the depth). The shipped packs' heads were trained on this backbone.
LAYERS ?= 20
# Set VLLM_URL (and MODEL_NAME) to use a running OpenAI-compatible server instead, and
# EMBEDDING_URL (with EMBEDDING_MODEL_NAME) for a running embedding server.
VLLM_URL ?=
MODEL_NAME ?= smollm2-135m-instruct
EMBEDDING_URL ?=
EMBEDDING_MODEL_NAME ?= $(MODEL_NAME)-l$(LAYERS)
DEMO_ARGS ?=
BENCH_ARGS ?=
# `make reliability`: e.g. RELIABILITY_ARGS="--runs 1 --soak-minutes 2"
RELIABILITY_ARGS ?=
COMPARE_ARGS ?=
# `make eval`: both shipped packs over the shipped labeled dataset; reports in .eval/<pack name>/
EVAL_ARGS ?= --policy policies/listings.yaml --policy policies/videos.yaml --data samples/labeled.jsonl --out .eval
# `make train`: heads and thresholds for both shipped packs from the calibration split, written
# to .train/ (copy the packs and their .heads.json files into policies/ to ship them)
TRAIN_ARGS ?= --policy policies/listings.yaml --policy policies/videos.yaml --data datasets/moderation-v1/calibration.jsonl --out .train --review-recall 0.85
# `make sweep-depth`: the backbone depths measured (heads trained at each on the calibration split)
SWEEP_DEPTHS ?= 5 10 15 20 25 30
# `make calibrate`: thresholds (and a score calibration) on the calibration split for packs with
# a prompt scorer, here the shipped listings candidate; calibrated packs in .calibrate/<pack
# name>.yaml (e.g. CALIBRATE_ARGS="... --method platt --review-recall 0.9"). The shipped packs'
# thresholds come from `make train` (out-of-fold scores of their heads).
CALIBRATE_ARGS ?= --policy policies/candidates/listings-v2.yaml --data datasets/moderation-v1/calibration.jsonl --out .calibrate

.PHONY: install vllm demo eval calibrate train sweep-depth compare-scorers test unit deploy-check lint docs clean bench-overhead bench-saturation bench-latency bench-scorers bench-dtype reliability lock

$(BIN)/.installed: pyproject.toml
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# Prints nothing; exports the server's python, the model directory and the embedding
# backbone's directory for the recipes below.
define with_vllm
vllm_python="$$(bash scripts/vllm_env.sh)/bin/python"; \
if [ -d "$(MODEL)" ]; then model_dir="$(MODEL)"; else model_dir="$$(bash scripts/prepare_model.sh $(MODEL))"; fi; \
embedding_dir="$$(bash scripts/prepare_model.sh backbone "$$model_dir" $(LAYERS))"
endef

vllm:
	$(with_vllm); echo "vLLM python: $$vllm_python"; echo "model: $$model_dir"; echo "embedding backbone: $$embedding_dir"

# Prints nothing; sets server_args: the running servers (VLLM_URL, EMBEDDING_URL) or local
# vLLM servers to start (each command starts only those its packs need).
define with_model_server
server_args=(--model-name "$(MODEL_NAME)" --embedding-model-name "$(EMBEDDING_MODEL_NAME)"); \
if [ -n "$(VLLM_URL)" ] || [ -n "$(EMBEDDING_URL)" ]; then \
  [ -z "$(VLLM_URL)" ] || server_args+=(--vllm-url "$(VLLM_URL)"); \
  [ -z "$(EMBEDDING_URL)" ] || server_args+=(--embedding-url "$(EMBEDDING_URL)"); \
else \
  $(with_vllm); server_args+=(--vllm-python "$$vllm_python" --model-dir "$$model_dir" --embedding-model-dir "$$embedding_dir"); \
fi
endef

# Prints nothing; exports the benchmarks' model servers: the running ones (VLLM_URL with
# MODEL_NAME; EMBEDDING_URL with EMBEDDING_MODEL_NAME for the embedding server), else the vLLM
# virtualenv and model directories they start them from.
define with_bench_server
export MODEL_NAME="$(MODEL_NAME)" EMBEDDING_MODEL_NAME="$(EMBEDDING_MODEL_NAME)"; \
if [ -n "$(VLLM_URL)" ] || [ -n "$(EMBEDDING_URL)" ]; then \
  export VLLM_URL="$(VLLM_URL)" EMBEDDING_URL="$(EMBEDDING_URL)"; \
else \
  $(with_vllm); export STREAMPROC_VLLM_PYTHON="$$vllm_python" STREAMPROC_MODEL_DIR="$$model_dir" \
    STREAMPROC_EMBEDDING_MODEL_DIR="$$embedding_dir"; \
fi
endef

demo: install
	$(with_model_server); $(BIN)/streamproc demo "$${server_args[@]}" $(DEMO_ARGS)

eval: install
	$(with_model_server); $(BIN)/streamproc eval "$${server_args[@]}" $(EVAL_ARGS)

calibrate: install
	$(with_model_server); $(BIN)/streamproc calibrate "$${server_args[@]}" $(CALIBRATE_ARGS)

# Heads for the embedding_probe scorer and their thresholds, fitted on the calibration split;
# trained packs and heads in .train/ (copy both into policies/ to ship them).
train: install
	$(with_model_server); $(BIN)/streamproc train "$${server_args[@]}" $(TRAIN_ARGS)

# The backbone's depth, measured: heads trained at each depth on the calibration split only.
sweep-depth: install
	$(with_vllm); bash scripts/sweep_depth.sh "$$vllm_python" "$$model_dir" "$(SWEEP_DEPTHS)"

# Every scorer/prompt variant calibrated on the calibration split and tested on the test split;
# the table goes to docs/scorers.md (e.g. COMPARE_ARGS="--only channel --only yes_no").
compare-scorers: install
	$(with_model_server); $(BIN)/python scripts/compare_scorers.py "$${server_args[@]}" --write-docs $(COMPARE_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy --check-untyped-defs tests load
	$(BIN)/streamproc schemas export --check

# The fast inner loop: unit tests only (no broker, no model server; `make lint` apart).
unit: install
	$(BIN)/pytest tests/unit

# The deployment checks (chart, compose, alert rules, dashboards, the image built and run), with
# the tools the project's scripts install; no model server (the image test starts a broker).
deploy-check: install
	$(BIN)/pytest -m deploy

# Rewrites requirements/image.txt, the image's runtime dependencies pinned with their hashes,
# after a change to pyproject.toml's dependencies (tests/deploy/test_image.py fails until then).
lock:
	bash scripts/lock_image.sh

# Rewrites the generated tables in README.md and docs/*.md (tests/unit/test_docs.py checks them).
docs: install
	$(BIN)/python scripts/gen_docs.py

# Exports the integration tests' model servers (the vLLM virtualenv and model directories).
define with_test_servers
$(with_vllm); export STREAMPROC_TEST_VLLM_PYTHON="$$vllm_python" STREAMPROC_TEST_MODEL_DIR="$$model_dir" \
  STREAMPROC_TEST_EMBEDDING_MODEL_DIR="$$embedding_dir"
endef

# Every tier but the minutes-long fault scenarios (`make reliability`): the integration tests
# on one worker, the unit and deployment tests on the other (tests/conftest.py).
test: lint
	$(with_test_servers); $(BIN)/pytest -n 2 -m "not reliability"

# Benchmarks (load/): each prints its ratio and writes load/results/*.json. Saturation, latency
# and scorers measure the running servers VLLM_URL (with MODEL_NAME) and EMBEDDING_URL (with
# EMBEDDING_MODEL_NAME) when set, as `make demo` does; the shipped packs ask the embedding server.
bench-overhead: install
	$(BIN)/python -m load.bench_overhead $(BENCH_ARGS)

bench-saturation: install
	$(with_bench_server); $(BIN)/python -m load.bench_saturation $(BENCH_ARGS)

bench-latency: install
	$(with_bench_server); $(BIN)/python -m load.bench_latency $(BENCH_ARGS)

# The shipped packs' scorer (embedding_probe) beside their channel variant: model server items/s
# and worker CPU per item, each as a ratio (both servers started in turn; a few minutes on CPU).
bench-scorers: install
	$(with_bench_server); $(BIN)/python -m load.bench_scorers $(BENCH_ARGS)

# The local vLLM servers' weight type: requests/s at float32 beside bfloat16, both servers,
# each started in turn at each type (about 5 minutes on a 2-core CPU).
bench-dtype: install
	$(with_vllm); STREAMPROC_VLLM_PYTHON="$$vllm_python" STREAMPROC_MODEL_DIR="$$model_dir" \
	  STREAMPROC_EMBEDDING_MODEL_DIR="$$embedding_dir" $(BIN)/python -m load.bench_dtype $(BENCH_ARGS)

# The tests marked reliability, the property tests with 2,000 examples each, then the fault
# scenarios (SIGKILL, model server faults, broker restart, poison records) several times each
# and a soak; rewrites the figures in docs/reliability.md and load/results/reliability.json.
reliability: install
	$(with_test_servers); $(BIN)/pytest -m reliability; \
	HYPOTHESIS_PROFILE=thorough $(BIN)/pytest tests/unit/test_hostile_input.py
	$(with_vllm); \
	STREAMPROC_VLLM_PYTHON="$$vllm_python" STREAMPROC_MODEL_DIR="$$model_dir" \
	STREAMPROC_EMBEDDING_MODEL_DIR="$$embedding_dir" $(BIN)/python -m load.reliability $(RELIABILITY_ARGS)

clean:
	rm -rf $(VENV) .demo .eval .calibrate .train .sweep .compare .test-logs .mypy_cache .ruff_cache .pytest_cache
