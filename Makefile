# The two commands: `make run` (set up and run everything) and `make test`.
PYTHON ?= python3
VENV := .venv
REQ_HASH := $(shell sha1sum requirements.txt | cut -c1-12)
STAMP := $(VENV)/.installed-$(REQ_HASH)

.PHONY: run test bench install stop-services

run: $(STAMP)
	$(VENV)/bin/python manage.py runall

test: $(STAMP)
	$(VENV)/bin/python -m pytest

bench: $(STAMP)
	$(VENV)/bin/python -m bench

install: $(STAMP)

# Reinstalls only when requirements.txt changes (the stamp is named by its hash).
$(STAMP): requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --disable-pip-version-check -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

stop-services: $(STAMP)
	$(VENV)/bin/python -c "from celeste.devserver.embedded import stop_services; stop_services()"
