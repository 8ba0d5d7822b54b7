# The book's two commands, each doing its own set-up on a fresh machine (Python 3.10+):
#   make book   build the book into _build/html (warnings are errors); installs requirements-book.txt
#   make test   run the unit tests and every notebook under nbval; installs requirements-test.txt
# and helpers:
#   make refresh NB=book/07_birnn.ipynb   re-run a chapter and store its new outputs
#   make browser-test                     open every built page in headless Chromium (after make book)
#   make install                          install both sets of requirements
#   make mathjax                          refresh the MathJax copy in book/_static/mathjax (needs npm)
# The virtual environment lives in $(VENV) (default .venv). Each set of requirements is installed once,
# and again only when its files or pyproject.toml change.

PYTHON ?= python3
VENV ?= .venv
BOOKFLAGS ?=
# pytest's workers: one per core, at most 8 (each notebook runs whole in one worker).
JOBS ?= $(shell $(PYTHON) -c "import os; print(min(os.cpu_count() or 1, 8))")
TESTFLAGS ?= -n $(JOBS) --dist loadfile
MATHJAX_VERSION ?= 3.2.2
BIN := $(VENV)/bin
BOOK_STAMP := $(VENV)/.installed-book
TEST_STAMP := $(VENV)/.installed-test

.PHONY: book test refresh browser-test install mathjax clean

book: $(BOOK_STAMP)
	$(BIN)/jupyter-book build . -W --keep-going $(BOOKFLAGS)

test: $(TEST_STAMP)
	$(BIN)/python -m pytest $(TESTFLAGS)

# Re-runs the notebook(s) in NB with the project's kernel and stores the outputs in place, then drops
# execution timestamps and stores each tqdm bar once, finished (see tools/tidy_notebooks.py).
refresh: $(TEST_STAMP)
	@test -n "$(NB)" || { echo "usage: make refresh NB=book/<chapter>.ipynb"; exit 2; }
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/jupyter execute --inplace $(NB)
	$(BIN)/python tools/tidy_notebooks.py $(NB)

# The browser test is left out of `make test` (addopts ignores tests/browser); clearing addopts runs it.
browser-test: $(TEST_STAMP)
	$(BIN)/python -m pytest -o addopts="" -rs -p no:cacheprovider tests/browser

install: $(BOOK_STAMP) $(TEST_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(BOOK_STAMP): requirements-book.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -r requirements-book.txt
	touch $@

$(TEST_STAMP): requirements-test.txt requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -r requirements-test.txt
	touch $@

mathjax:
	rm -rf _build/mathjax && mkdir -p _build/mathjax
	cd _build/mathjax && npm pack --silent mathjax@$(MATHJAX_VERSION) && tar xzf mathjax-$(MATHJAX_VERSION).tgz
	rm -rf book/_static/mathjax/output
	mkdir -p book/_static/mathjax/output/chtml/fonts
	cp _build/mathjax/package/es5/tex-chtml-full.js _build/mathjax/package/LICENSE book/_static/mathjax/
	cp -r _build/mathjax/package/es5/output/chtml/fonts/woff-v2 book/_static/mathjax/output/chtml/fonts/

clean:
	rm -rf _build screenshots
