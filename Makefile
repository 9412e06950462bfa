# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test test-extended test-fast lint docs bench bench-llm bench-quant zoo zoo-latency release demo-apps clean

# The environment: torch is pinned to exactly 2.13.0 (the CPU wheel on the machines'
# disk); constraints.txt pins every other package to the set the suite was run with.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[all,dev,ray]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/edge-export --model examples/digits.py:build --target all --out dist/

# The project's release (release.toml) into dist/releases/<version>/; RELEASE_VERSION overrides its version.
release: setup
	$(BIN)/edge-export release release.toml $(if $(RELEASE_VERSION),--version $(RELEASE_VERSION))

# Export the digits example and bundle its packages into both sample apps.
demo-apps: demo
	$(BIN)/edge-export bundle --app android dist/digits-0.1.0/android-fp32 dist/digits-0.1.0/tflite-fp32
	$(BIN)/edge-export bundle --app ios dist/digits-0.1.0/ios-fp32

# CI's command: everything but the `extended` long tail (each family is still covered), on two
# pytest workers, one test file per worker at a time (TEST_WORKERS=0 runs in one process). Most
# tests wait on single-threaded stages (imports, converters) of the CLI they start, so two
# workers finish the suite in about half the time on a 2-core machine.
TEST_WORKERS ?= 2
test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not extended" $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)
	$(MAKE) --no-print-directory docs

# The long tail too: every Core ML architecture, the second LLM, the failed-gate LLM run.
test-extended: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# edge-export vs the three libraries called directly, warm cache, --help, artifact latency:
# writes bench/results.json and bench/RESULTS.md (README's Performance section shows it).
bench: setup
	$(BIN)/python bench/run.py $(if $(RUNS),--runs $(RUNS)) $(if $(MODELS),--models $(MODELS))
	$(BIN)/python bench/llm.py $(if $(LARGE),--large)

# LLM rows (tiny real LM, every LLM target, fp32 and 4bit; LARGE=1 adds the 1.1 B android row):
# bench/llm.json and bench/LLM.md.
bench-llm: setup
	$(BIN)/python bench/llm.py $(if $(LARGE),--large)

# Static int8 recipe evidence (observers, layers kept float) on a depthwise CNN and digits, all
# three targets: writes bench/quantization.json and bench/QUANTIZATION.md.
bench-quant: setup
	$(BIN)/python bench/quantization.py

# The conformance zoo (zoo/models.py) through the CLI, fp32, every target, one model at a time:
# writes docs/coverage.json and docs/COVERAGE.md. MODELS=a,b runs a subset.
zoo: setup
	$(BIN)/python zoo/run.py $(if $(MODELS),--models $(MODELS))

# Host latency per model and target (fp32) beside PyTorch eager, on a representative subset
# of the zoo (the whole zoo is ~45 min of CPU): writes docs/LATENCY.md and docs/latency.json.
LATENCY_MODELS ?= small_cnn,efficientnet_lite0,all_minilm_l6_v2,bert,vit,gpt2
zoo-latency: setup
	$(BIN)/python zoo/run.py --latency --models $(if $(MODELS),$(MODELS),$(LATENCY_MODELS))

# The docs site (mkdocs.yml) into site/: --strict fails on a broken link, a missing page or a
# missing included file; docs/hooks.py generates the command, recipe and schema reference.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf dist site .pytest_cache
