# Two commands after cloning: `make demo` (the main job) and `make test`.
# Both create or refresh .venv first (scripts/setup-venv.sh picks a CPU or CUDA torch).
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.winnow-installed

.PHONY: demo test lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml scripts/setup-venv.sh
	bash scripts/setup-venv.sh $(VENV)

# A real search: the digits joint space, SQLite store in runs/, in-process worker.
demo: $(STAMP)
	$(BIN)/winnow search run examples/digits-search.yaml --store sqlite:///runs/demo.db

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
