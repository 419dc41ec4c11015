# Two commands after cloning: `make demo` (the main job) and `make test`.
# Both create or refresh .venv first (scripts/setup-venv.sh picks a CPU or CUDA torch).
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.winnow-installed

.PHONY: demo test lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml scripts/setup-venv.sh
	bash scripts/setup-venv.sh $(VENV)

# The main job: a real search through an embedded server (digits joint space, SQLite in runs/demo).
demo: $(STAMP)
	$(BIN)/winnow demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
