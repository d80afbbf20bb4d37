"""FSDP + QLoRA on 2 GPUs: `accelerate launch --config_file fsdp_qlora.yaml -m qlora_nb.cli train` on the tiny model.

GPU-only: skipped unless 2 CUDA devices are visible. Run: `pytest tests/cuda -m cuda -s`.
NOT YET RUN: the machines that built this test had no GPU.
"""
import json, math, sys

import pytest
import torch
from conftest import first_chats, run, sets

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(torch.cuda.device_count() < 2, reason='FSDP + QLoRA needs 2 CUDA devices')]

# `python -m qlora_nb.cli train` as it is, plus one line per rank: steps, world size, FSDP or not, peak GPU memory.
WORKER = '''
import functools, json, os, sys, torch
import qlora_nb.cli, qlora_nb.train as T
_train = T.train
@functools.wraps(_train)   # the CLI reads `train`'s options through the wrapper
def train(cfg, **kw):
    s = _train(cfg, **kw)
    t = s['trainer']
    info = dict(steps=s['steps'], world_size=t.args.world_size, fsdp=bool(t.is_fsdp_enabled),
                peak_gib=torch.cuda.max_memory_allocated() / 2**30, saved=s['save_path'])
    with open(os.path.join(os.environ['DUMP_DIR'], 'rank%s.json' % os.environ.get('RANK', 0)), 'w') as f: json.dump(info, f)
    return s
T.train = train
qlora_nb.cli.main(sys.argv[1:])
'''


def train_on(tmp, name, launch, data):
    d = tmp/name; (d/'dump').mkdir(parents=True)
    worker = tmp/'worker.py'; worker.write_text(WORKER, encoding='utf-8')
    args = sets(f'training_data_json_path={data}', f'result_path={d}/run', f'save_path={d}/adapter', 'data.max_length=256',
                'training.num_train_epochs=1', 'training.per_device_train_batch_size=4', 'training.gradient_accumulation_steps=1',
                'training.learning_rate=1e-3', 'training.logging_steps=1', 'training.save_steps=1000')
    run('train', *args, script=worker, launch=launch, cwd=tmp, env={'DUMP_DIR': d/'dump'}, timeout=900, rc=0)
    return d, [json.loads(f.read_text()) for f in sorted((d/'dump').glob('rank*.json'))]


def test_fsdp_qlora_two_gpus(tmp_path):
    from qlora_nb.distributed import accelerate_config
    from qlora_nb.tiny import tiny_model_dir
    data = first_chats(tmp_path/'chats.jsonl', 32)
    _, one = train_on(tmp_path, 'one', [sys.executable], data)
    d, two = train_on(tmp_path, 'fsdp', [sys.executable, '-m', 'accelerate.commands.launch', '--config_file',
                                     str(accelerate_config('fsdp_qlora')), '--num_processes', '2'], data)
    assert len(two) == 2 and all(r['world_size'] == 2 and r['fsdp'] for r in two), two
    assert {r['steps'] for r in two} == {math.ceil(one[0]['steps'] / 2)}
    assert [r['saved'] is not None for r in two].count(True) == 1            # rank 0 alone saves
    print('\npeak GPU memory, GiB: 1 GPU', round(one[0]['peak_gib'], 3), '| FSDP per GPU', [round(r['peak_gib'], 3) for r in two])

    from transformers import AutoModelForCausalLM
    from peft import PeftModel, get_peft_model_state_dict
    m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir()), d/'adapter')
    w = get_peft_model_state_dict(m)
    assert any('lora_B' in k for k in w) and all(v.abs().sum() > 0 for k, v in w.items() if 'lora_B' in k)  # gathered, trained
