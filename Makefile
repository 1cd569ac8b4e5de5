# The two commands: `make run` (the site) and `make test` (lint, types, every test).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
# Settings read PORT too (ENGINE_URL: how the site reaches its own engine).
export PORT
export PYTHONUNBUFFERED := 1

.PHONY: setup browser run test test-faults lint bench clean

# Shared install step: a virtualenv with every Python dependency, redone when the
# requirements change.
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# Debian's Chromium for the browser tests (Playwright cannot download browsers here).
browser:
	@command -v chromium >/dev/null || { \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

.env:
	@printf 'DEBUG=true\nSECRET_KEY=%s\nENGINE_API_KEY=%s\n' \
	  "$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))')" \
	  "$$($(PYTHON) -c 'import secrets; print("sk-engine-" + secrets.token_urlsafe(32))')" > $@
	@echo "Wrote .env (development settings, a fresh SECRET_KEY and ENGINE_API_KEY)."

run: setup .env
	@if (exec 3<>/dev/tcp/127.0.0.1/$(PORT)) 2>/dev/null; then \
	  echo "Port $(PORT) is in use (a site still running?): stop it, or make run PORT=8001"; \
	  exit 1; fi
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	$(PY) manage.py reap_images
	@# Ctrl-C, or either process ending by itself, stops the other with SIGTERM (as a
	@# background job Daphne ignores SIGINT) and waits for both. The URL is printed once
	@# the site answers.
	@trap 'kill $$(jobs -p) 2>/dev/null; wait' INT TERM EXIT; \
	$(PY) manage.py db_worker --queue-name '*' & \
	$(VENV)/bin/daphne -b 127.0.0.1 -p $(PORT) --websocket-max-message-size 131072 artterminal.asgi:application & \
	site=$$!; \
	until (exec 3<>/dev/tcp/127.0.0.1/$(PORT)) 2>/dev/null; do \
	  kill -0 $$site 2>/dev/null || exit 1; sleep 0.2; done; \
	echo; echo "Art Terminal is running at http://127.0.0.1:$(PORT)/terminals/lobby/"; \
	echo "Demo login: demo / demo-gallery-2026   (Ctrl-C stops the site and the worker)"; \
	wait -n

# Tests run with development settings and a throwaway key; pytest-django turns DEBUG off.
test: setup browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	DEBUG=true $(VENV)/bin/mypy .
	DEBUG=true $(VENV)/bin/pytest

test-faults: setup browser
	DEBUG=true $(VENV)/bin/pytest -m faults

lint: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup
	DEBUG=true $(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
