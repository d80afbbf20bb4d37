"""Two processes (torchrun, gloo, CPU) batching by token budget, as the default preset does: each rank gets distinct batches,
the optimizer steps halve against one process, a `kill -9` and a rerun resume on both ranks to the adapter of an
uninterrupted 2-process run, and `--overwrite` deletes on the main process only, the other waiting for it."""
import json, math, time
from pathlib import Path

import pytest
import torch
from conftest import FAULT, adapter_weights, complete_steps, first_chats, rel_diff, run, sets, torchrun

pytestmark = pytest.mark.slow   # long end-to-end runs: CI runs them; `pytest -m "not slow"` skips them locally

# The first 24 sample chats: 23 rows in 6 token-budget batches, so 6 steps an epoch on one process and 3 on two
# (each rank takes every other batch); 3 epochs.
SETS = ['data.max_length=64', 'data.max_tokens_per_batch=192', 'training.gradient_accumulation_steps=1', 'training.num_train_epochs=3',
        'training.save_steps=2', 'training.save_total_limit=null', 'training.logging_steps=1', 'training.learning_rate=1e-3',
        'training.disable_tqdm=true']


def launch(tmp, name, nproc, data, kind='none', step=0, result=None, extra=(), **env_kw):
    "Run `qlora-nb train` under fault_run.py on `nproc` processes; return (return code, output, dumps, batch logs)."
    d = tmp/name; (d/'dump').mkdir(parents=True, exist_ok=True); (d/'batches').mkdir(exist_ok=True)
    rp = result or d/'run'
    args = sets(f'training_data_json_path={data}', f'result_path={rp}', f'save_path={d}/adapter', *SETS)
    p = run(kind, step, 'train', *args, *extra, script=FAULT, launch=torchrun(nproc), cwd=tmp,
            env={'DUMP_DIR': d/'dump', 'BATCH_LOG': d/'batches', **env_kw}, timeout=600)
    dumps = {p_.stem: torch.load(p_) for p_ in sorted((d/'dump').glob('rank*.pt'))}
    logs = {p_.stem: [json.loads(l) for l in p_.read_text(encoding='utf-8').splitlines()] for p_ in sorted((d/'batches').glob('rank*.jsonl'))}
    return p.returncode, p.stdout + p.stderr, dumps, logs


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('ddp_resume')
    data = first_chats(tmp/'chats.jsonl', 24)
    t0 = time.time()
    out = dict(tmp=tmp, data=data)
    out['two'] = launch(tmp, 'two', 2, data)                                          # uninterrupted, 2 processes
    out['one'] = launch(tmp, 'one', 1, data)                                          # uninterrupted, 1 process
    out['killed'] = launch(tmp, 'b', 2, data, 'sigkill', 5, FAULT_RANK='0')           # rank 0 killed at step 5 (epoch 2)
    out['killed_left'] = complete_steps(tmp/'b'/'run'), (tmp/'b'/'adapter').exists()
    out['resumed'] = launch(tmp, 'b', 2, data)                                         # the same command again
    ref_adapter = adapter_weights(tmp/'two'/'adapter')
    out['ref_adapter'] = ref_adapter
    # --overwrite on the finished reference's result_path, the main process slow to delete: the other must wait for it.
    out['overwrite'] = launch(tmp, 'ow', 2, data, result=tmp/'two'/'run', extra=['--overwrite'], SLOW_PREPARE='3')
    print(f"\n2-process resume tests: {time.time()-t0:.0f} s")
    return out


def test_each_rank_gets_distinct_batches(runs):
    rc, out, dumps, logs = runs['two']
    assert rc == 0, out[-3000:]
    assert sorted(logs) == ['rank0', 'rank1'] and all(d['world_size'] == 2 for d in dumps.values())
    by = {r: {e['step']: e for e in log} for r, log in logs.items()}
    assert by['rank0'].keys() == by['rank1'].keys() == set(range(1, 10))
    for s in range(1, 10):
        rows0, rows1 = ({tuple(x) for x in by[r][s]['rows']} for r in ('rank0', 'rank1'))
        assert rows0 and rows1 and not rows0 & rows1, s                      # different rows on the two ranks at every step
    for epoch in range(3):   # together, the ranks see every row once an epoch
        rows = [tuple(x) for r in by for e in by[r].values() if e['epoch'] == epoch for x in e['rows']]
        assert len(rows) == len(set(rows)) == 23, epoch


def test_half_the_optimizer_steps(runs):
    (rc1, out1, one, _), (rc2, out2, two, _) = runs['one'], runs['two']
    assert rc1 == 0 and rc2 == 0, out1[-2000:] + out2[-2000:]
    assert one['rank0']['steps'] == 18 and {d['steps'] for d in two.values()} == {math.ceil(18 / 2)}


def test_kill_and_rerun_resume_on_both_ranks_to_the_same_adapter(runs):
    rc, out, _, _ = runs['killed']
    assert rc != 0 and runs['killed_left'] == ([2, 4], False), (runs['killed_left'], out[-3000:])
    rc, out, dumps, _ = runs['resumed']
    assert rc == 0, out[-3000:]
    assert 'checkpoint-4 (step 4)' in out                                  # killed at 5: the last complete checkpoint is 4
    assert sorted(dumps) == ['rank0', 'rank1'] and all(Path(d['resumed_from']).name == 'checkpoint-4' for d in dumps.values())
    assert all(d['steps'] == 9 for d in dumps.values())
    w0, w1 = (dumps[r]['weights'] for r in ('rank0', 'rank1'))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    diff = rel_diff(runs['ref_adapter'], adapter_weights(runs['tmp']/'b'/'adapter'))
    moved = max(v.abs().max().item() for k, v in runs['ref_adapter'].items() if 'lora_B' in k)
    print(f"\n2 processes, token budget: kill -9 of rank 0 at step 5 (epoch 2), rerun resumed from 4: "
          f"max|Δ|/max|w| vs uninterrupted = {diff:.3g} (largest lora_B {moved:.3g})")
    assert moved > 1e-3 and diff < 1e-5


def test_overwrite_deletes_on_the_main_process_while_the_other_waits(runs):
    rc, out, dumps, _ = runs['overwrite']
    assert rc == 0, out[-3000:]
    assert 'Resuming' not in out
    assert sorted(dumps) == ['rank0', 'rank1'] and all(d['resumed_from'] is None and d['steps'] == 9 for d in dumps.values())
    assert complete_steps(runs["tmp"]/"two"/"run") == [2, 4, 6, 8, 9]     # all written afresh (9: the last step)
    diff = rel_diff(runs['ref_adapter'], adapter_weights(runs['tmp']/'ow'/'adapter'))
    assert diff < 1e-5, diff                                                 # trained afresh, as the first run did
