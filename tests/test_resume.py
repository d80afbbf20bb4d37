"Interrupt a run (Ctrl-C, then `kill -9` in the middle of writing a checkpoint), resume it, and compare with an uninterrupted run."
import json, time
import pytest
from conftest import FAULT, adapter_weights, complete_steps, finish, first_chats, rel_diff, run, sets, spawn

pytestmark = pytest.mark.slow   # long end-to-end runs: CI runs them; `pytest -m "not slow"` skips them locally

SETS = ['training.max_steps=8', 'training.save_steps=2', 'training.save_total_limit=2', 'training.logging_steps=1',
        'training.per_device_train_batch_size=2', 'training.gradient_accumulation_steps=2', 'data.max_length=96',
        'training.disable_tqdm=true']

def train_args(d, name):
    "`train` with result_path `d/name/run`, save_path `d/name/adapter` and SETS."
    return ['train', *sets(f'result_path={d}/{name}/run', f'save_path={d}/{name}/adapter', *SETS)]

def test_interrupt_and_resume_gives_the_same_adapter(tmp_path):
    t0 = time.time()
    a = spawn(*train_args(tmp_path, 'a'))   # the reference, alongside
    b = tmp_path/'b'/'run'

    p = run('sigint', 3, *train_args(tmp_path, 'b'), script=FAULT, rc=130)   # Ctrl-C at the end of step 3
    out = p.stdout + p.stderr
    assert 'Interrupted at step 3' in out and 'checkpoint-3' in out, out
    assert complete_steps(b) == [2, 3] and not (tmp_path/'b'/'adapter').exists()

    p = run('sigkill-in-save', 6, *train_args(tmp_path, 'b'), script=FAULT, rc=-9)  # kill -9 while checkpoint-6 is written
    out = p.stdout + p.stderr
    assert 'Resuming from' in out and 'checkpoint-3 (step 3)' in out, out
    assert (b/'checkpoint-6'/'adapter_model.safetensors').exists() and complete_steps(b) == [3, 4]   # 6 is there, but not complete
    assert (b/'.qlora_nb.lock').exists()                                                        # a stale lock, left by the killed run

    p = run(*train_args(tmp_path, 'b'), rc=0)
    out = p.stdout + p.stderr
    assert 'checkpoint-4 (step 4)' in out, out                                                  # not the half-written 6
    assert complete_steps(b) == [6, 8] and (b/'loss.png').stat().st_size > 0 and not (b/'.qlora_nb.lock').exists()

    out_a = finish(a, rc=0).stdout
    assert 'Resuming' not in out_a
    wa, wb = adapter_weights(tmp_path/'a'/'adapter'), adapter_weights(tmp_path/'b'/'adapter')
    assert wa.keys() == wb.keys() and len(wa) > 0
    diff = max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)
    moved = max(wa[k].float().abs().max().item() for k in wa if 'lora_B' in k)   # lora_B starts at 0: it did train
    print(f"\nresume: max |adapter(uninterrupted) - adapter(Ctrl-C + kill -9 + resumed)| = {diff:.3g} "
          f"(largest lora_B weight {moved:.3g}); {time.time()-t0:.0f} s")
    assert moved > 1e-3
    assert diff < 1e-5


# Interrupted in any epoch, with any batching: `kill -9` three times in one run, each resume compared with an uninterrupted run
# at the next checkpoint written after it. The first 24 sample chats (23 rows trained on, 24 in the seed's format) make
# 6 optimizer steps an epoch in every mode below, so steps 1-6 are epoch 1, 7-12 epoch 2, 13-18 epoch 3, 19-20 epoch 4.

COMMON = ['data.max_length=64', 'training.max_steps=20', 'training.save_steps=4', 'training.save_total_limit=null',
          'training.logging_steps=1', 'training.learning_rate=1e-3', 'training.disable_tqdm=true']
MODES = {
    'rows grouped by length': ['data.max_tokens_per_batch=null', 'training.per_device_train_batch_size=2', 'training.gradient_accumulation_steps=2'],
    'token budget (default)': ['data.max_tokens_per_batch=192', 'training.gradient_accumulation_steps=1'],
    'packing': ['data.packing=true', 'data.max_tokens_per_batch=192', 'training.gradient_accumulation_steps=1'],
    'plain shuffling': ['data.max_tokens_per_batch=null', 'training.train_sampling_strategy=random',
                        'training.per_device_train_batch_size=4', 'training.gradient_accumulation_steps=1'],
    'seed preset': ['preset=seed', 'training.fp16=false', 'training.bf16=true', 'training.per_device_train_batch_size=4',
                    'training.gradient_accumulation_steps=1'],
}
# (fault, step, checkpoint resumed from by the next run, where that resume is judged, what it is)
PLAN = [('sigkill', 6, 4, 'checkpoint-8', 'epoch 1, between checkpoints: killed at step 6, resumed from 4'),
        ('sigkill-after-save', 8, 8, 'checkpoint-16', 'epoch 2, right after a checkpoint: killed after saving 8, resumed from 8'),
        ('sigkill', 19, 16, 'adapter', 'epoch 4, between checkpoints: killed at step 19, resumed from 16 (epoch 3)')]

@pytest.fixture(scope='module')
def chats24(tmp_path_factory): return first_chats(tmp_path_factory.mktemp('data')/'chats24.jsonl', 24)

def mode_args(d, name, mode, data, kind='none', step=0):
    "fault_run.py's arguments: fault `kind` at `step`, then `train` in `mode` on `data` into `d/name`."
    args = sets(f'training_data_json_path={data}', f'result_path={d}/{name}/run', f'save_path={d}/{name}/adapter', *COMMON, *MODES[mode])
    return [kind, step, 'train', *args]

@pytest.mark.parametrize('mode', list(MODES))
def test_kill_and_resume_in_any_epoch(mode, tmp_path, chats24):
    t0 = time.time()
    ref = spawn(*mode_args(tmp_path, 'ref', mode, chats24), script=FAULT)
    b, resumed = tmp_path/'b'/'run', None
    for kind, step, resume_from, _, _ in PLAN:
        p = run(*mode_args(tmp_path, 'b', mode, chats24, kind, step), script=FAULT, rc=-9)
        out = p.stdout + p.stderr
        assert (f'checkpoint-{resumed} (step {resumed})' in out) if resumed else 'Resuming' not in out, out
        assert complete_steps(b)[-1] == resume_from
        resumed = resume_from
    p = run(*mode_args(tmp_path, 'b', mode, chats24), script=FAULT, rc=0)
    out = p.stdout + p.stderr
    assert f'checkpoint-{resumed} (step {resumed})' in out, out
    out_ref = finish(ref, rc=0).stdout
    assert 'Resuming' not in out_ref, out_ref

    a = tmp_path/'ref'/'run'
    state = json.loads((a/'checkpoint-20'/'trainer_state.json').read_text())
    test_epochs = {h['step']: h['epoch'] for h in state['log_history'] if 'loss' in h}
    assert test_epochs[6] == 1.0 and test_epochs[12] == 2.0, test_epochs       # 6 steps an epoch, as PLAN assumes
    where = lambda run_dir, at: run_dir.parent/'adapter' if at == 'adapter' else run_dir/at
    diffs = {what: rel_diff(adapter_weights(where(a, at)), adapter_weights(where(b, at))) for *_, at, what in PLAN}
    wa = adapter_weights(where(a, 'adapter'))
    moved = max(v.abs().max().item() for k, v in wa.items() if 'lora_B' in k)
    print(f"\n{mode}: " + '; '.join(f"{what}: max|Δ|/max|w| = {d:.3g}" for what, d in diffs.items())
          + f" (largest lora_B {moved:.3g}); {time.time()-t0:.0f} s")
    assert moved > 1e-3
    assert all(d < 1e-5 for d in diffs.values()), diffs
