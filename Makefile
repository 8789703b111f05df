# make lectures   set up .venv if needed, then run every notebook headlessly (quick profile) into build/
# make test       set up the test tools too if needed, then lint (ruff) and run the tests (pytest)
# make tensorflow add TensorFlow (1.3 GB), to read OpenAI's original checkpoint instead of the Hub's safetensors
# make lab        open the series in JupyterLab (outputs you save never reach git: see .gitattributes)
# make bench      measure training and generation speed, teaching path against fast path
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
PROFILE ?= quick
# Where pip finds the small CPU build of PyTorch (used only when torch is missing and no NVIDIA GPU is seen).
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: setup setup-dev tensorflow git-filter lectures test lab prefetch bench clean

setup: $(STAMP)

# What a learner needs for the lectures: requirements.txt.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	@# Without an NVIDIA GPU, take PyTorch's CPU build (about 0.2 GB) before anything pulls the CUDA one (several GB).
	@if $(BIN)/python -c "import torch" 2>/dev/null; then echo "PyTorch is already installed."; \
	elif [ "$$(uname -s)" = Linux ] && ! command -v nvidia-smi >/dev/null 2>&1; then \
	  echo "No NVIDIA GPU found: installing the CPU build of PyTorch from $(TORCH_CPU_INDEX)"; \
	  $(BIN)/python -m pip install torch --index-url $(TORCH_CPU_INDEX) --extra-index-url https://pypi.org/simple; \
	fi
	$(BIN)/python -m pip install -r requirements.txt -e .
	$(MAKE) --no-print-directory git-filter
	touch $(STAMP)

# What the tests need besides: requirements-dev.txt (pytest, ruff, TensorFlow, reference implementations).
setup-dev: $(DEV_STAMP)

$(DEV_STAMP): $(STAMP) requirements-dev.txt requirements-tensorflow.txt
	$(BIN)/python -m pip install -r requirements-dev.txt
	@# The course's own package, a test-only reference (tests/test_course_numbers.py). --no-deps: its numpy<2.1
	@# pin must not downgrade our numpy; the tests import only its pure-PyTorch chapter modules.
	$(BIN)/python -m pip install --no-deps "llms-from-scratch==1.0.19"
	touch $(DEV_STAMP)

tensorflow: $(STAMP)
	$(BIN)/python -m pip install -r requirements-tensorflow.txt

# Strip notebook outputs on `git add` / `git status` (configured for this clone only; harmless outside git).
git-filter:
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
	  git config filter.nbstripout.clean "'$(abspath $(BIN))/python' -m nbstripout --keep-id" && \
	  git config filter.nbstripout.smudge cat && \
	  git config diff.ipynb.textconv "'$(abspath $(BIN))/python' -m nbstripout --keep-id -t" && \
	  echo "git: notebook outputs are stripped on commit (filter nbstripout)"; fi

lectures: $(STAMP)
	$(BIN)/python -m helpers lectures --profile $(PROFILE)

test: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lab: $(STAMP) git-filter
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/

prefetch: $(STAMP)
	$(BIN)/python -m helpers prefetch

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf build .pytest_cache .ruff_cache
