"""Data-parallel training: `qlora-nb train` on 2 CPU processes (torchrun, gloo) against 1 process, on the tiny model."""
import math, re, time

import pytest
import torch
from qlora_nb.records import CHATS_VERSION
from qlora_nb.tiny import TINY_VERSION
from conftest import FAULT, first_chats, run, sets, torchrun

pytestmark = pytest.mark.slow   # long end-to-end runs: CI runs them; `pytest -m "not slow"` skips them locally

# `qlora-nb train` through tests/fault_run.py with no fault: as it is, plus one file per rank after training (DUMP_DIR):
# that rank's adapter weights, the process group it trained in, and its step count.


def train_on(tmp, name, nproc, data, cache):
    "Train one epoch on `data` with `nproc` processes; return (completed process, run folder, seconds)."
    d = tmp/name; (d/'dump').mkdir(parents=True)
    args = sets(f'training_data_json_path={data}', f'result_path={d}/run', f'save_path={d}/out/adapter', 'data.max_length=256',
                'training.num_train_epochs=1', 'training.per_device_train_batch_size=4', 'training.gradient_accumulation_steps=1',
                'training.learning_rate=1e-3', 'training.logging_steps=1', 'training.save_steps=1000',
                'data.max_tokens_per_batch=null')   # batches of rows, so that steps count exactly
    t0 = time.time()
    p = run('none', 0, 'train', *args, script=FAULT, launch=torchrun(nproc), cwd=tmp, env={'QLORA_NB_CACHE': cache, 'DUMP_DIR': d/'dump'},
            timeout=600, rc=0)
    return p, d, time.time() - t0


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('ddp')
    data = first_chats(tmp/'chats.jsonl', 16)
    cache = tmp/'cache'   # empty: both ranks build the tiny model at once, and must agree
    two = train_on(tmp, 'two', 2, data, cache)
    one = train_on(tmp, 'one', 1, data, cache)
    print(f"\n1 process: {one[2]:.0f} s; 2 processes: {two[2]:.0f} s")
    return dict(one=one, two=two, cache=cache)


def dumps(d): return {p.stem: torch.load(p) for p in sorted((d/'dump').glob('rank*.pt'))}


def test_ddp_engaged_with_gloo(runs):
    two = dumps(runs['two'][1])
    assert sorted(two) == ['rank0', 'rank1']
    assert all(r['world_size'] == 2 and r['backend'] == 'gloo' for r in two.values())
    assert dumps(runs['one'][1])['rank0']['world_size'] == 1


def test_half_the_optimizer_steps(runs):
    s1 = dumps(runs['one'][1])['rank0']['steps']
    s2 = {r['steps'] for r in dumps(runs['two'][1]).values()}
    assert s1 >= 2 and s2 == {math.ceil(s1 / 2)}, (s1, s2)


def test_ranks_hold_identical_trained_adapters(runs):
    w0, w1 = (r['weights'] for r in dumps(runs['two'][1]).values())
    assert w0.keys() == w1.keys() and any('lora_B' in k for k in w0)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert all(w0[k].abs().sum() > 0 for k in w0 if 'lora_B' in k)   # lora_B starts at zero: it trained


def files(d):
    "Files under `d`, with step numbers dropped and each rank's `rng_state_<rank>.pth` counted as one `rng_state.pth`."
    norm = lambda f: re.sub(r'rng_state_\d+', 'rng_state', re.sub(r'checkpoint-\d+', 'checkpoint', f))
    return sorted({norm(str(p.relative_to(d))) for p in d.rglob('*') if p.is_file() and p.parent.name != 'dump'})


def test_main_process_writes_and_reports_once(runs):
    (p, d, _), (_, d1, _) = runs['two'], runs['one']
    assert [x.name for x in (d/'out').iterdir()] == ['adapter']           # one adapter, no leftover temporary folder
    assert files(d) == files(d1) and any(f.endswith('trainer_state.json') for f in files(d))   # what one process writes
    assert len(list((d/'run').glob('checkpoint-*/rng_state_*.pth'))) == 2  # ... plus each rank's random state
    assert p.stdout.count('Trained builtin:tiny') == 1                    # the summary comes from rank 0 only
    assert (p.stdout + p.stderr).count('train_runtime') == 1               # so does the Trainer's log
    cache = sorted(x.name for x in runs['cache'].iterdir() if not x.name.startswith('.'))
    assert cache == ['chats-v%d' % CHATS_VERSION, 'tiny-llama-v%d' % TINY_VERSION, 'tokenized'], cache   # the model built once; checked chats and rows cached
    assert len(list((runs['cache']/'tokenized').iterdir())) == 1                     # one entry, whichever rank wrote it
    assert not [x for x in runs['cache'].iterdir() if x.name.startswith('.building-')]


def test_adapter_loads_with_plain_peft(runs):
    from transformers import AutoModelForCausalLM
    from peft import PeftModel, get_peft_model_state_dict
    d = runs['two'][1]
    base = AutoModelForCausalLM.from_pretrained(runs['cache']/f'tiny-llama-v{TINY_VERSION}')
    m = PeftModel.from_pretrained(base, d/'out'/'adapter')
    w = dumps(d)['rank0']['weights']
    loaded = get_peft_model_state_dict(m)
    assert loaded.keys() == w.keys() and all(torch.equal(loaded[k].float(), w[k]) for k in w)
