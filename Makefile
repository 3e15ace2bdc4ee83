# Two commands do all the set-up on a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
RUN    ?= runs/quickstart-$(shell date +%Y%m%d-%H%M%S)

FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup train test lint bench clean build-deps fashion-mnist test-tools horovod largebatch largebatch-reduced critical-batch adaptive procedures nas

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt trainer/data/_roijpeg.c | $(BUILD_DEPS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c 'import os, sysconfig; os.stat(sysconfig.get_paths()["include"] + "/Python.h")' 2>/dev/null || \
	  $(SUDO) apt-get install -y --no-install-recommends python3-dev || \
	  ($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends python3-dev)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The ROI JPEG decoder (trainer/data/_roijpeg.c, built by `pip install`) compiles against libjpeg-turbo's headers:
# Debian's libjpeg62-turbo-dev, with a C compiler (and Python's headers: python3-dev where the Python is Debian's).
BUILD_DEPS := /usr/include/jpeglib.h /usr/bin/gcc

build-deps: $(BUILD_DEPS)

$(BUILD_DEPS):
	$(SUDO) apt-get install -y --no-install-recommends libjpeg62-turbo-dev gcc || \
	  ($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends libjpeg62-turbo-dev gcc)

# Debian's dataset-fashion-mnist holds the Fashion-MNIST IDX files (tests and the Fashion-MNIST recipes use them).
fashion-mnist: $(FASHION_MNIST)

$(FASHION_MNIST):
	$(SUDO) apt-get install -y --no-install-recommends dataset-fashion-mnist || \
	  ($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends dataset-fashion-mnist)

# Test tools from Debian: tmux (a real pseudo-terminal for the console tests) and Chromium (the dashboard test
# opens the dashboard in headless Chromium).
TEST_TOOLS := /usr/bin/tmux /usr/bin/chromium

test-tools: $(TEST_TOOLS)

$(TEST_TOOLS):
	$(SUDO) apt-get install -y --no-install-recommends tmux chromium || \
	  ($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends tmux chromium)

# Optional backend (cluster.backend: horovod): horovod 0.28.1 patched to build against this torch; the wheel is
# cached in ~/.cache/bigbatch/wheels per (horovod, torch, python) version, so only the first build takes minutes.
HOROVOD := $(VENV)/.horovod-stamp

horovod: $(HOROVOD)

$(HOROVOD): $(STAMP) cluster/install/horovod.sh
	cluster/install/horovod.sh $(BIN)/python
	touch $(HOROVOD)

train: $(STAMP)
	$(BIN)/bigbatch train recipes/quickstart.yaml --out $(RUN)

test: $(STAMP) $(FASHION_MNIST) $(HOROVOD) $(TEST_TOOLS)
	$(BIN)/python -m pytest -q --durations=40

lint: $(STAMP)
	$(BIN)/ruff check trainer optim cluster tests bench

bench: $(STAMP)
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/optim_step.py
	$(BIN)/python bench/scaling.py
	$(BIN)/python bench/data.py
	$(BIN)/python bench/peers.py
	$(BIN)/python bench/shard_coverage.py
	$(BIN)/python bench/gpu.py
	$(BIN)/python bench/guidelines.py
	$(BIN)/python bench/noise_cost.py

# Goyal et al. / LARS in miniature on Fashion-MNIST (bench/largebatch.py): every cell's lr tuned on a holdout
# of the training set over the same grid, 3 seeds: ~95 min on 2 cores (~65 with --batches 2048,8192), or ~10 min reduced (9.6 measured).
largebatch: $(STAMP) $(FASHION_MNIST)
	$(BIN)/python bench/largebatch.py

largebatch-reduced: $(STAMP) $(FASHION_MNIST)
	$(BIN)/python bench/largebatch.py --reduced --out bench/results/largebatch_reduced.md

# McCandlish et al.'s check: steps to a held-out target against the batch, fitted B_noise vs the online
# B_simple (bench/critical_batch.py): ~30 min on 2 cores.
critical-batch: $(STAMP) $(FASHION_MNIST)
	$(BIN)/python bench/critical_batch.py

# Issue 31: the adaptive batch against fixed 256, 1024, 2048 and 8192, 2 seeds: steps, examples and modelled
# wall time (64 GPUs, a declared step-time model) to the held-out target (bench/adaptive.py): ~35 min on 2 cores.
adaptive: $(STAMP) $(FASHION_MNIST)
	$(BIN)/python bench/adaptive.py

# timm's / torchvision's procedures and the lecture's normalization order on Fashion-MNIST
# (bench/procedures.py): ~40 min on 2 cores.
procedures: $(STAMP) $(FASHION_MNIST)
	$(BIN)/python bench/procedures.py

# SPOS search on Fashion-MNIST, then found vs random vs all-3x3 retrained (bench/nas.py): ~50 min.
nas: $(STAMP) $(FASHION_MNIST)
	$(BIN)/python bench/nas.py

clean:
	rm -rf $(VENV) runs .pytest_cache
