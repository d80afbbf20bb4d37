"Evaluation during training: early stopping and the best checkpoint across a kill -9 and resume, the sample answers, cumulative decoding."
import json, time
from pathlib import Path
import pytest
from conftest import FAULT, adapter_weights, complete_steps, finish, first_chats, rel_diff, run, sets, spawn

# Four chats trained on, sixteen others held out: the eval loss (7.32, 7.15, 6.79, 7.22, 6.87, 6.81 at steps 2-12) is lowest
# at step 6, so with patience 3 the run stops at step 12 of 40, and the best checkpoint, 6, is older than the newest.
SETS = ['training.max_steps=40', 'training.save_steps=2', 'training.logging_steps=2', 'training.save_total_limit=1',
        'training.learning_rate=2e-2', 'data.max_length=96', 'training.disable_tqdm=true', 'data.max_tokens_per_batch=null',
        'training.per_device_train_batch_size=4', 'training.gradient_accumulation_steps=1', 'training.early_stopping_patience=3',
        'eval.samples=2', 'eval.max_new_tokens=6']

@pytest.fixture(scope='module')
def split(tmp_path_factory):
    from qlora_nb.tiny import read_sample_chats
    d, c = tmp_path_factory.mktemp('data'), read_sample_chats()
    for name, rows in (('train', c[:4]), ('eval', c[100:116])):
        (d/f'{name}.jsonl').write_text(''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in rows), encoding='utf-8')
    return d

def args(d, name, split, kind='none', step=0):
    return [kind, step, 'train', *sets(f'training_data_json_path={split}/train.jsonl', f'data.eval_path={split}/eval.jsonl',
                                       f'result_path={d}/{name}/run', f'save_path={d}/{name}/adapter', *SETS)]

def state(ck:Path)->dict: return json.loads((ck/'trainer_state.json').read_text())
def samples(run_dir:Path)->list[dict]: return [json.loads(l) for l in (run_dir/'samples.jsonl').read_text(encoding='utf-8').splitlines()]

def test_early_stopping_and_best_checkpoint_across_kill_and_resume(tmp_path, split):
    t0 = time.time()
    ref = spawn(*args(tmp_path, 'ref', split), script=FAULT)
    b = tmp_path/'b'/'run'
    # kill -9 while checkpoint-10 is written: its eval (and sample answers) happened, the checkpoint is not complete
    run(*args(tmp_path, 'b', split, 'sigkill-in-save', 10), script=FAULT, rc=-9)
    assert complete_steps(b) == [6, 8]                         # save_total_limit=1, but 6 is the best: kept
    assert max(r['step'] for r in samples(b)) == 10
    p = run(*args(tmp_path, 'b', split), script=FAULT, rc=0)
    assert 'checkpoint-8 (step 8)' in p.stdout + p.stderr      # patience counter 1 and best 6, read back from its state
    finish(ref, rc=0)
    a = tmp_path/'ref'/'run'
    for r in (a, b):
        last = r/'checkpoint-12'
        assert complete_steps(r) == [6, 12], complete_steps(r)            # stopped early at 12 of 40; best kept
        s = state(last)
        assert Path(s['best_model_checkpoint']).name == 'checkpoint-6'
        evals = {h['step']: h['eval_loss'] for h in s['log_history'] if 'eval_loss' in h}
        assert min(evals, key=evals.get) == 6 and max(evals) == 12
        assert s['stateful_callbacks']['EarlyStoppingCallback']['attributes']['early_stopping_patience_counter'] == 3
        # the adapter saved is the best checkpoint's, not the last one's
        assert rel_diff(adapter_weights(r/'checkpoint-6'), adapter_weights(r.parent/'adapter')) < 1e-6
        assert rel_diff(adapter_weights(r/'checkpoint-12'), adapter_weights(r.parent/'adapter')) > 1e-3
        # one line per prompt and evaluation, none repeated after the resume
        sa = samples(r)
        assert [x['step'] for x in sa] == [s for s in range(2, 13, 2) for _ in range(2)]
        assert all(x['tokens'] <= 6 and x['answer'] and '\ufffd' not in x['answer'] for x in sa), sa
    assert rel_diff(adapter_weights(a.parent/'adapter'), adapter_weights(b.parent/'adapter')) < 1e-5
    assert [x['answer'] for x in samples(a)] == [x['answer'] for x in samples(b)]
    print(f"\nearly stopping + best checkpoint across kill -9 and resume: {time.time()-t0:.0f} s")

def test_cumulative_decoding_on_byte_fallback():
    from transformers import AutoTokenizer
    from qlora_nb.tiny import tiny_model_dir
    from qlora_nb.train import TextStream
    tok = AutoTokenizer.from_pretrained(tiny_model_dir())
    text = '鰻重と蕎麦をください。'
    ids = tok.encode(text, add_special_tokens=False)
    assert any(tok.convert_ids_to_tokens(i).startswith('<0x') for i in ids)    # written with byte tokens
    assert '\ufffd' in ''.join(tok.decode([i]) for i in ids)                    # token by token breaks
    printed = []
    ts = TextStream(tok, on_text=printed.append)
    for i in ids: ts.push([i])
    assert ''.join(printed) == text and ts.text == text
    assert all('\ufffd' not in p for p in printed)

def test_report_to_tensorboard(tmp_path):
    "`training.report_to` goes to `TrainingArguments` as is: with TensorBoard, a real event file holds the train and eval loss."
    pytest.importorskip('tensorboard')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from conftest import train_adapter
    d = tmp_path/'tb'
    train_adapter(d, ['training.report_to=tensorboard', 'training.max_steps=4', 'training.logging_steps=1', 'training.eval_steps=2',
                      'training.save_steps=2', 'data.eval_fraction=0.1', 'data.max_length=64', 'eval.samples=0', 'training.disable_tqdm=true'])
    files = list((d/'run').rglob('events.out.tfevents.*'))
    assert files, sorted(str(p.relative_to(d)) for p in (d/'run').rglob('*'))
    ea = EventAccumulator(str(files[0].parent)).Reload()
    train = [e.value for e in ea.Scalars('train/loss')]
    evals = [(e.step, e.value) for e in ea.Scalars('eval/loss')]
    state = json.loads((d/'run'/'checkpoint-4'/'trainer_state.json').read_text())
    assert train == pytest.approx([h['loss'] for h in state['log_history'] if 'loss' in h], rel=1e-5)
    assert evals == [(h['step'], pytest.approx(h['eval_loss'], rel=1e-5)) for h in state['log_history'] if 'eval_loss' in h] and len(evals) == 2
