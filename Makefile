# make run  : set up the virtual environment, start the services and run simsite (gunicorn)
# make dev  : the same with Django's development server (autoreload, DEBUG on)
# make test : set up the virtual environment, start the services and run the tests
# make test-fast : the same without the browser, worker and slow tiers
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements.sha256

.PHONY: run dev test test-fast manage fashion-mnist bench-indexing bench-search bench-signatures bench-training bench-decode bench-load lint venv browser clean

venv: $(STAMP)

# Reinstall only when the requirements change (the torch wheels are large).
$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if [ "$$(cat $(STAMP) 2>/dev/null)" != "$$(sha256sum requirements.txt requirements-dev.txt)" ]; then \
		echo "[simsite] installing requirements into $(VENV)"; \
		$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt && \
		sha256sum requirements.txt requirements-dev.txt > $(STAMP); \
	else touch $(STAMP); fi

run: venv
	$(PY) scripts/stack.py run

# runserver with autoreload and DEBUG on, for working on the code
dev: venv
	$(PY) scripts/stack.py dev

# Browser tests drive Debian's Chromium (Playwright cannot download browsers here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "[simsite] installing Debian's chromium for the browser tests"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else echo "[simsite] chromium not found: browser tests will be skipped (sudo apt-get install chromium)"; fi; }

# Real photos for the demo and for tests when ../shared/data is absent (Debian's package).
fashion-mnist:
	@test -d /usr/share/datasets/fashion-mnist || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "[simsite] installing Debian's dataset-fashion-mnist"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
		else echo "[simsite] dataset-fashion-mnist not found: tests that need it will be skipped"; fi; }

test: venv browser fashion-mnist
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) scripts/stack.py test $(PYTEST_ARGS)

# The tests without a browser, real workers or the slow ones (markers in pyproject.toml), one process per core
# (at most 4: each takes two of Redis's 16 databases): under 3 minutes on 2 cores, for the edit loop.
test-fast: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) scripts/stack.py test -m "not browser and not workers and not slow" -n auto --maxprocesses 4 $(PYTEST_ARGS)

# make manage ARGS="import_products products.csv": a manage.py command on the run services
manage: venv
	$(PY) scripts/stack.py manage $(ARGS)

# Benchmarks print figures (ratios against baselines measured in the same run).
bench-indexing: venv
	$(PY) scripts/stack.py bench benchmarks/indexing.py $(ARGS)

bench-search: venv
	$(PY) scripts/stack.py bench benchmarks/search.py $(ARGS)

bench-signatures: venv
	$(PY) scripts/stack.py bench benchmarks/signatures.py $(ARGS)

bench-training: venv
	$(PY) scripts/stack.py bench benchmarks/training.py $(ARGS)

# Mixed load and faults against the real stack (gunicorn, workers, beat): about 10 minutes.
bench-load: venv
	$(PY) scripts/stack.py bench benchmarks/load.py $(ARGS)

bench-decode: venv
	$(PY) benchmarks/decode.py $(ARGS)

lint: venv
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf .run media private staticfiles
