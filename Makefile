# `make test` and `make demo` work on a fresh clone: they create .venv and install on first use,
# and skip the install when pyproject.toml has not changed since.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
SANDBOX_IMAGE := loopcoder/base:bookworm

.PHONY: install test test-slow demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/pip || $(PY) -m venv --clear $(VENV) || python3 -m venv --clear $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU wheel first: an unpinned resolve would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# LoopCoder-Nano's base GGUF, without its dependencies (pyproject.toml [tool.loopcoder] says why)
	$(BIN)/pip install -q --no-deps "$$($(BIN)/python -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["tool"]["loopcoder"]["nano-base"])')"
	rm -f $(VENV)/.installed-*
	touch $@

test: install
	$(BIN)/python -m pytest -m "not slow and not gpu" $(PYTEST_ARGS)

test-slow: install
	$(BIN)/python -m pytest -m "slow and not gpu" $(PYTEST_ARGS)

# The main job on the embedded default: LoopCoder-Nano (built on first use from the pip package's GGUF and the
# shipped delta) served by the native engine on loopback, the agent in a Docker sandbox built from the
# instance's environment image, on a bundled held-out instance (a real bug injected into sqlparse, a package no
# training task came from), then the eval and the HTML report; it prints the verdict and the time it took.
# Docker is brought up as CI does (.ci/docker-up.sh, idempotent, needs root) when it is not usable.
# `loopcoder swebench demo` without --nano runs the tiny random model on a mini instance (machinery only).
demo: install
	@docker info >/dev/null 2>&1 && docker image inspect $(SANDBOX_IMAGE) >/dev/null 2>&1 || .ci/docker-up.sh || \
		{ echo "error: make demo needs Docker and the $(SANDBOX_IMAGE) image: run .ci/docker-up.sh as root" >&2; exit 1; }
	$(BIN)/loopcoder swebench demo --nano

clean:
	rm -rf $(VENV) .cache
