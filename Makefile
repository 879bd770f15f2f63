# Two commands set everything up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
DIFFKIT := $(VENV)/bin/diffkit
DEMO := runs/demo
export OMP_NUM_THREADS ?= 2

.PHONY: demo test test-fast bench install clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install --quiet -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import diffkit, torch, torchaudio, typer, pytest"
	touch $@

install: $(VENV)/.installed

# The main job on built-in data: train on the 8-mode ring (about a minute on 2 CPU cores), sample with
# two samplers, score both against fresh true points and plot them beside the true mixture.
demo: install
	mkdir -p $(DEMO)
	$(DIFFKIT) train points --data builtin:ring --out $(DEMO) --steps 3000
	$(DIFFKIT) sample points -m $(DEMO) -n 4000 --sampler dpm++2m --steps 20 -o $(DEMO)/dpm++2m-20.csv
	$(DIFFKIT) sample points -m $(DEMO) -n 4000 --sampler ddpm --steps 100 -o $(DEMO)/ddpm-100.csv
	$(DIFFKIT) eval points -m $(DEMO) --samples $(DEMO)/dpm++2m-20.csv --samples $(DEMO)/ddpm-100.csv --plot $(DEMO)/ring.png
	@echo "demo: plot in $(DEMO)/ring.png"

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) bench/samplers.py

clean:
	rm -rf $(VENV) runs .pytest_cache
