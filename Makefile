# Two commands do all set-up on a fresh machine (see README.md):
#   make demo   fit a tokenizer, prepare shards, train a small model for a few minutes, sample from it
#   make test   the fast tests (a few minutes; `make test-all` adds the slow ones: whole runs, fuzzing, seed-size compiles)
# Both create (or reuse) the virtualenv in .venv, install the package into it and make sure clang exists.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   := runs/demo

.PHONY: demo test test-all lint smoke clang
# a 100k-parameter model, a few minutes on a laptop; a second `make demo` keeps the trained model and samples again
DEMO_MODEL := --dim=64 --n_layers=2 --n_heads=4 --n_kv_heads=4 --max_seq_len=64 --dropout=0.0
demo: $(STAMP) clang
	$(PY) cli.py tokenizer fit --data synthetic --kind char --out $(DEMO)/char.tok
	$(PY) cli.py data prepare --data synthetic --tokenizer $(DEMO)/char.tok --out $(DEMO)/shards
	test -d $(DEMO)/run/ckpt || $(PY) cli.py train --out_dir=demo/run --data=$(DEMO)/shards $(DEMO_MODEL) \
	  --batch_size=32 --max_iters=300 --eval_interval=100 --eval_iters=10 --warmup_iters=30 --learning_rate=2e-3
	$(PY) cli.py sample --checkpoint=$(DEMO)/run --max_new_tokens=400 --temperature=0.8 --top_k=20 --start='Once upon a time'

test: $(STAMP) clang
	$(PY) -m pytest -q -m "not slow" tests

test-all: $(STAMP) clang
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# A short run of the real pipeline on the TinyStories samples next to the project (CI runs it when they exist).
SHARED ?= ../shared/data/tinystories
smoke: $(STAMP) clang
	$(PY) cli.py tokenizer fit --data $(SHARED) --kind char --out runs/smoke/char.tok
	$(PY) cli.py tokenizer fit --data $(SHARED) --kind bpe --vocab-size 361 --out runs/smoke/bpe361.tok
	$(PY) cli.py data prepare --data $(SHARED) --tokenizer runs/smoke/char.tok --out runs/smoke/shards
	rm -rf runs/smoke/run
	$(PY) cli.py train --out_dir=smoke/run --data=runs/smoke/shards --dim=32 --n_layers=2 --n_heads=4 --n_kv_heads=4 \
	  --max_seq_len=64 --batch_size=16 --max_iters=20 --eval_interval=10 --eval_iters=2 --warmup_iters=5 --learning_rate=3e-3
	$(PY) cli.py sample --checkpoint=runs/smoke/run --max_new_tokens=100 --temperature=0.8 --top_k=20
	$(PY) cli.py export-log runs/smoke/run --max_new_tokens=100

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "tinystory needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# tinygrad's CPU backend compiles its kernels with clang.
clang:
	@command -v clang >/dev/null 2>&1 || { \
	  if [ "$$(uname)" = Darwin ]; then echo "tinystory needs clang: run 'xcode-select --install'" >&2; exit 1; \
	  elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null; \
	  else echo "tinystory needs clang for tinygrad's CPU backend: run 'sudo apt-get install clang'" >&2; exit 1; fi; }
	@command -v clang >/dev/null 2>&1 || { echo "clang is still missing: install it with 'apt-get install clang'" >&2; exit 1; }
