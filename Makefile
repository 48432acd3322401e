# freemask: `make help` lists the targets. Everything runs from the project's .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/demo.yaml
# The CPU wheel of torch is installed first so that nothing pulls a multi-GB CUDA build.
# On a GPU machine: make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: help install test lint format run bench compile images images-check lock scan deploy-check clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install: $(STAMP)  ## Create .venv and install freemask with its dev tools (idempotent)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip check
	@touch $@

lint: $(STAMP)  ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)  ## Apply ruff's formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint  ## Lint, then every test except those that need a GPU or the built images
	HF_HUB_OFFLINE=1 $(BIN)/pytest -m "not gpu and not containers"

run: $(STAMP)  ## The whole pipeline on one machine (CONFIG=configs/demo.yaml by default)
	@# The demo's validation set: held-out rendered scenes with exact labels (idempotent).
	@if [ "$(CONFIG)" = configs/demo.yaml ]; then $(BIN)/freemask toyworld scenes --config $(CONFIG) --out runs/demo/validation --count 100 --seed 7; fi
	$(BIN)/freemask run --config $(CONFIG)

# bench_judge reads the pools bench_quality keeps in build/bench-quality: it runs after it.
LATER_BENCHES := benchmarks/bench_quality.py benchmarks/bench_judge.py
bench: $(STAMP)  ## Speed and memory benchmarks (benchmarks/bench_*.py)
	@set -e; for bench in $(filter-out $(LATER_BENCHES),$(sort $(wildcard benchmarks/bench_*.py))); do \
		echo "== $$bench"; $(BIN)/python $$bench; done
	@echo "== benchmarks/bench_quality.py"; $(BIN)/python benchmarks/bench_quality.py --work build/bench-quality
	@echo "== benchmarks/bench_judge.py"; $(BIN)/python benchmarks/bench_judge.py

compile: $(STAMP)  ## Compile the Kubeflow pipeline to build/freemask_pipeline.yaml
	@test -f pipelines/freemask_pipeline.py || { echo "pipelines/freemask_pipeline.py does not exist yet"; exit 2; }
	$(BIN)/freemask compile --config configs/default.yaml --out build/freemask_pipeline.yaml

# Starts what it needs when nothing runs (images/engine.sh: a Docker engine, the debian base made
# with debootstrap, a registry on 127.0.0.1:5000 for REGISTRY=127.0.0.1:5000/...).
REGISTRY ?=
images: $(STAMP)  ## Build one image per family (FAMILIES=... for some); PUSH=1 REGISTRY=... pushes and writes images/images.lock.json
	images/engine.sh docker base $(if $(filter 127.0.0.1:5000/%,$(REGISTRY)),registry)
	$(BIN)/python images/build.py --network host $(if $(REGISTRY),--registry $(REGISTRY)) $(if $(PUSH),--push) $(FAMILIES)

# The compiled pipeline run in the built images by kfp.local's DockerRunner
# (tests/kubeflow/test_container_run.py), on CHECK_CONFIG, pinned by images/images.lock.json.
CHECK_CONFIG ?= configs/demo.yaml
images-check: $(STAMP)  ## Run the compiled pipeline (CHECK_CONFIG) in the images that make images built
	images/engine.sh docker
	FREEMASK_CHECK_CONFIG=$(CHECK_CONFIG) HF_HUB_OFFLINE=1 $(BIN)/pytest -m containers tests/kubeflow/test_container_run.py

# Hash-locked requirements of every image family, for Linux x86_64 and Python 3.11 (the images': Debian bookworm's python3),
# resolved on PyPI by uv. The torch layer is locked first and constrains the GPU families, so they
# share it. Run again after changing pyproject.toml's dependencies or requirements/*.in.
LOCK := $(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock"
lock: $(STAMP)  ## Regenerate requirements/*.lock (the images' pinned, hashed dependencies)
	$(LOCK) requirements/torch.in -o requirements/torch.lock
	$(LOCK) pyproject.toml --extra generate -c requirements/torch.lock -o requirements/generate.lock
	$(LOCK) pyproject.toml --extra segment -c requirements/torch.lock -o requirements/segment.lock
	$(LOCK) pyproject.toml --extra cpu -o requirements/cpu.lock
	$(LOCK) pyproject.toml --extra client -o requirements/client.lock
	$(LOCK) requirements/mlflow-server.in -o requirements/mlflow-server.lock
	$(LOCK) requirements/build.in -o requirements/build.lock

SCAN_VENV := .venv-scan
scan: $(STAMP)  ## Security scan of the rendered Kubernetes manifests (checkov, in its own venv)
	@test -x $(SCAN_VENV)/bin/checkov || { $(PYTHON) -m venv $(SCAN_VENV) && $(SCAN_VENV)/bin/python -m pip install -q checkov==3.3.30; }
	@mkdir -p build/manifests
	@set -e; for overlay in base overlays/dev overlays/prod overlays/standalone overlays/multi-user; do \
		name=$$(basename $$overlay); \
		$(BIN)/kubectl kustomize manifests/$$overlay > build/manifests/$$name.yaml; \
		echo "== checkov manifests/$$overlay"; \
		$(SCAN_VENV)/bin/checkov -f build/manifests/$$name.yaml --framework kubernetes --compact --quiet --skip-download; \
	done

# An overlay's rendered manifests must hold no placeholder before `kubectl apply -k`: this lists
# each one left with the variable to set in manifests/overlays/$(OVERLAY)/settings.yaml.
OVERLAY ?=
deploy-check: $(STAMP)  ## Refuse an overlay that still holds a placeholder (OVERLAY=standalone, multi-user, dev, prod)
	@test -n "$(OVERLAY)" || { echo "name the overlay: make deploy-check OVERLAY=multi-user (or standalone, dev, prod)"; exit 2; }
	$(BIN)/freemask deploy-check $(OVERLAY)

clean:  ## Remove build outputs and caches (keeps .venv and runs/)
	rm -rf build .pytest_cache .ruff_cache
