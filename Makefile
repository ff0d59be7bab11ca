# The two commands: `make run` (set up and run everything) and `make test`.
PYTHON ?= python3
VENV := .venv
REQ_HASH := $(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)
STAMP := $(VENV)/.installed-$(REQ_HASH)

.PHONY: run test test-fast lint bench install stop-services flower

run: $(STAMP)
	$(VENV)/bin/python manage.py runall

test: lint
	$(VENV)/bin/python -m pytest

# The suite without the tests that start Celery workers (a few minutes faster).
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -m "not worker"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(VENV)/bin/python -m bench

# Flower (the Celery monitor) behind HTTP basic auth: FLOWER_BASIC_AUTH=user:password is
# required; FLOWER_ADDRESS (127.0.0.1) and FLOWER_PORT (5555). See celeste/flower.py.
flower: $(STAMP)
	$(VENV)/bin/python -m celeste.flower

install: $(STAMP)

# Reinstalls only when a requirements file changes (the stamp is named by their hash).
# Both commands install the development set too: the embedded servers and the tests need it.
$(STAMP): requirements.txt requirements-dev.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

stop-services: $(STAMP)
	$(VENV)/bin/python -c "from celeste.devserver.embedded import stop_services; stop_services()"
