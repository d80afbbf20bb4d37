#!/usr/bin/env bash
# GPU benchmark: the seed recipe, qlora_nb (default and tuned) and TRL on a ~0.7B random-init Llama
# (qlora_nb.bench.SIZES['gpu']), a few minutes on one H100. Needs torch with CUDA, bitsandbytes and trl.
# usage: scripts/bench_gpu.sh [OUT.json] [N conversations]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${1:-bench_gpu.json}; N=${2:-64}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -c "from qlora_nb.bench import add_bench_parser; import argparse; p=argparse.ArgumentParser(); add_bench_parser(p.add_subparsers()); a=p.parse_args(['bench','--device','cuda','-n','$N','--json','$OUT']); a.fn(a)"
