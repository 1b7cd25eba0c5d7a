# The course's commands. Quick start: `make book` then `make test` (see README.md).
PYTHON ?= python3
BOOK_FLAGS = -W -n --keep-going

.PHONY: install book test unit notebooks reference bench clean

install:  ## install labkit and every pinned dependency into the current Python
	$(PYTHON) -m pip install -q -r requirements.txt

book: install  ## build the course site into _build/html (strict: any warning fails)
	jupyter-book build . $(BOOK_FLAGS)
	@echo "The site is at _build/html/index.html"

test: install  ## every test: labkit's unit tests, the strict book build, the notebooks (CI profile)
	$(PYTHON) -m pytest tests
	LABKIT_PROFILE=ci $(PYTHON) -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider labs

unit:  ## labkit's unit tests only (fast)
	$(PYTHON) -m pytest tests -m "not book"

notebooks:  ## re-execute the notebooks in the CI profile and compare their checked outputs
	LABKIT_PROFILE=ci $(PYTHON) -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider labs

reference:  ## the reference run: re-execute every notebook in place, full profile
	$(PYTHON) scripts/run_notebooks.py

bench:  ## throughput benchmark of labkit's loop against plain PyTorch
	$(PYTHON) benchmarks/bench_train.py

clean:
	rm -rf _build .pytest_cache
