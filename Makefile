# Two commands on a fresh machine:  `make demo`  and  `make test`.
VENV       ?= .venv
PY         := $(VENV)/bin/python
# A pinned CPU wheel installs fast here; a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
# scaleout: dagster-celery + dagster-postgres for tests/test_scaleout.py and deploy/production/
EXTRAS     ?= dev,scaleout
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export HF_HUB_OFFLINE := 1

.PHONY: install services demo test ui clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" || $(PY) -m pip install -q "torch>=2.4"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

demo: install $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m emerge_assets.demo

# redis-server + postgresql (Debian packages) for the scale-out test; installed with apt-get when
# missing and root, otherwise that one test skips and says why.
services:
	@bash .ci/install-scaleout-services || echo "make services: redis-server/postgresql unavailable; tests/test_scaleout.py will skip"

test: install services
	$(PY) -m pytest

ui: install $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster dev -w workspace.yaml

clean:
	rm -rf .emerge_home .dagster_home
