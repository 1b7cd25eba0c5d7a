# The course's commands. Quick start: `make book` then `make test` (see README.md).
#
# Everything runs inside the project's own virtual environment, .venv, which the first
# command creates with `$(PYTHON) -m venv` and fills from requirements.txt. The system
# Python is only used to create it, so this works on a distribution Python that refuses
# `pip install` outside a virtual environment (PEP 668, "externally managed").
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Re-install when the pins or the package metadata change.
STAMP := $(VENV)/.installed
BOOK_FLAGS = -W -n --keep-going
NBVAL = LABKIT_PROFILE=ci $(BIN)/python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider labs
# the labs that read labkit/course.py, under its 2024 edition: every cell runs; outputs are not compared
COURSE_LABS = $(shell grep -l "course.current()" labs/*.ipynb)
NBVAL_2024 = LABKIT_COURSE=2024 LABKIT_PROFILE=ci $(BIN)/python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider $(COURSE_LABS)

SITE ?= solutions
SUBMISSIONS ?= submissions
GRADE_FLAGS ?=

.PHONY: install book results student grade test unit notebooks notebooks-2024 reference bench clean

install: $(STAMP)  ## create .venv and install labkit with every pinned dependency into it

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	  echo "'$(PYTHON) -m venv' failed. On Debian/Ubuntu install the venv module first:"; \
	  echo "  sudo apt-get install python3-venv"; \
	  echo "or name another Python (3.10 or newer): make $(MAKECMDGOALS) PYTHON=python3.12"; exit 1; }

$(STAMP): requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -r requirements.txt
	@touch $@

results: $(STAMP)  ## regenerate book/results.md from the reference runs' labs/results/*.json
	$(BIN)/python scripts/make_results.py

student: $(STAMP)  ## write the handouts (valid nbgrader source notebooks) and the labkit wheel they install into student/, to publish
	$(BIN)/python scripts/make_student.py

grade: $(STAMP)  ## grade SUBMISSIONS=<folder> into grades.csv (+ grades.answers.md), each in a sandbox; GRADE_FLAGS="--timeout 60 --jobs 2"
	$(BIN)/python scripts/grade.py $(SUBMISSIONS) --out grades.csv $(GRADE_FLAGS)

book: results  ## build the course site into _build/html (strict: any warning fails); SITE=handout: no solutions
	$(BIN)/python scripts/make_student.py --draft
	LABKIT_SITE=$(SITE) $(BIN)/jupyter-book build . $(BOOK_FLAGS)
	@echo "The site is at _build/html/index.html"

test: $(STAMP)  ## every test: labkit's unit tests, the strict book build in a browser, the notebooks (CI profile, both editions)
	$(BIN)/python -m pytest tests
	$(NBVAL)
	$(NBVAL_2024)

unit: $(STAMP)  ## labkit's unit tests only (no book build, no browser)
	$(BIN)/python -m pytest tests -m "not book"

notebooks: $(STAMP)  ## re-execute the notebooks in the CI profile and compare their checked outputs
	$(NBVAL)

notebooks-2024: $(STAMP)  ## re-execute the notebooks in the CI profile under the 2024 edition (nothing compared)
	$(NBVAL_2024)

reference: $(STAMP)  ## the reference run: re-execute every notebook in place, full profile
	$(BIN)/python scripts/run_notebooks.py
	$(BIN)/python scripts/make_results.py
	$(BIN)/python scripts/make_student.py --draft

bench: $(STAMP)  ## every benchmarks/bench_*.py, one after the other
	@set -e; for script in benchmarks/bench_*.py; do \
	  echo "== $$script"; $(BIN)/python $$script; done

clean:  ## remove the built site and caches (keeps .venv)
	rm -rf _build .pytest_cache
