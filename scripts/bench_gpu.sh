#!/usr/bin/env bash
# GPU benchmark: the seed recipe, qlora_nb (default and tuned) and TRL on a ~0.7B random-init Llama
# (qlora_nb.bench.SIZES['gpu']), a few minutes on one H100. Needs torch with CUDA, bitsandbytes and trl.
# Then the vocabulary part (--part vocab): the same model widened to a 152,064 vocabulary, plain loss, chunked
# loss and TRL at 1,024 and 4,096 tokens a batch, into OUT with .vocab.json for .json. With liger-kernel or
# cut-cross-entropy installed, the chunked runs use its fused kernel; each run records the path it took
# (loss_path: liger, cut-cross-entropy, chunked, plain or trl), printed at the end.
# usage: scripts/bench_gpu.sh [OUT.json] [N conversations]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${1:-bench_gpu.json}; N=${2:-64}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -c "from qlora_nb.bench import add_bench_parser; import argparse; p=argparse.ArgumentParser(); add_bench_parser(p.add_subparsers()); a=p.parse_args(['bench','--device','cuda','-n','$N','--json','$OUT']); a.fn(a)"
VOUT="${OUT%.json}.vocab.json"
python -c "import importlib.util as u; print('fused loss kernels installed:', [m for m in ('liger_kernel', 'cut_cross_entropy') if u.find_spec(m)] or 'none (chunked torch)')"
python -c "from qlora_nb.bench import add_bench_parser; import argparse; p=argparse.ArgumentParser(); add_bench_parser(p.add_subparsers()); a=p.parse_args(['bench','--part','vocab','--device','cuda','-n','$N','--json','$VOUT']); a.fn(a)"
python -c "import json; r=json.load(open('$VOUT')); print('loss paths that ran:', sorted({x['loss_path'] for x in r['runs']}))"
