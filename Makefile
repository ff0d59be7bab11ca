# The two commands: `make run` (set up and run everything) and `make test`.
PYTHON ?= python3
VENV := .venv
REQ_HASH := $(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)
STAMP := $(VENV)/.installed-$(REQ_HASH)

.PHONY: run test test-fast lint bench install stop-services flower browser

run: $(STAMP)
	$(VENV)/bin/python manage.py runall

test: lint browser
	$(VENV)/bin/python -m pytest

# The admin's browser test (tests/test_admin_browser.py) drives Debian's Chromium. As root
# with apt-get (CI), install chromium and chromium-driver when missing; elsewhere say why
# the test will be skipped. Never fails the build: the test itself reports a skip.
browser:
	@command -v chromedriver >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing chromium and chromium-driver (Debian) for the admin's browser test..."; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
	      >/dev/null 2>&1 || echo "Could not install Chromium: the browser test will be skipped."; \
	  else \
	    echo "No chromedriver and no root apt-get: the admin's browser test will be skipped."; \
	  fi; }

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
