"One resolved run: each fact about a run is decided once, saved beside the adapter, and every command starts from it."
import json
from pathlib import Path
import pytest

import shutil
from conftest import adapter_overrides, first_chats, refused_in_process, run, sets

def _counting(monkeypatch, target, name, calls=None):
    "Replace `target.name` with a wrapper that counts its calls (into `calls`, when given); return the counter."
    calls, f = [] if calls is None else calls, getattr(target, name)
    def counted(*a, **k):
        calls.append(1)
        return f(*a, **k)
    monkeypatch.setattr(target, name, counted)
    return calls

def test_train_reads_the_data_once(tmp_path, monkeypatch, capsys):
    "A training run hashes and parses its data once and tokenizes it once; a second run on the same data tokenizes nothing. (What the run decides is checked on the qlora_nb_run.json it saves, below.)"
    import qlora_nb.records as Rec, qlora_nb.tokenize as Tk
    from qlora_nb.config import load_config
    from qlora_nb.cli import embedded_default_path
    from qlora_nb.train import train
    data = first_chats(tmp_path/'chats.jsonl', 40)   # data this session's cache has not seen
    cfg = load_config(embedded_default_path(), [f'training_data_json_path={data}', f'result_path={tmp_path}/run',
                                                f'save_path={tmp_path}/adapter', 'training.max_steps=2', 'training.disable_tqdm=true'])
    counts = {}
    for mod, name in ((Rec, 'data_fingerprint'), (Rec, 'scan_chats'), (Tk, 'tokenize_chats')):
        _counting(monkeypatch, mod, name, counts.setdefault(name, []))
    assert train(cfg)['steps'] == 2
    assert {k: len(v) for k, v in counts.items()} == dict(data_fingerprint=1, scan_chats=1, tokenize_chats=1), counts
    for v in counts.values(): v.clear()
    capsys.readouterr()
    train(cfg, overwrite=True)   # the same data again (a resume, or a second run): found in the cache
    assert {k: len(v) for k, v in counts.items()} == dict(data_fingerprint=1, scan_chats=0, tokenize_chats=0), counts
    assert 'nothing to tokenize' in capsys.readouterr().out

def test_run_saved_beside_the_adapter_and_shown_by_inspect(trained_adapter):
    "`train` writes qlora_nb_run.json beside the adapter; its facts are what `resolve_run` decides and what `inspect` prints."
    from qlora_nb.config import load_config
    from qlora_nb.cli import embedded_default_path
    from qlora_nb.run import RUN_NAME, resolve_run
    over = adapter_overrides(trained_adapter)   # the session's adapter: the embedded default, 12 steps
    saved = json.loads((trained_adapter/RUN_NAME).read_text(encoding='utf-8'))
    r = resolve_run(load_config(embedded_default_path(), over))   # what `qlora-nb train` ran: the embedded default
    mine = r.to_dict()
    for k in ('architecture', 'vocab_size', 'hidden_size', 'layers', 'linear_names', 'lora_targets', 'pad_token', 'pad_token_id',
              'eos_token', 'end_of_turn', 'stop_token_ids', 'template', 'compute_dtype', 'mixed_precision', 'gradient_checkpointing',
              'checkpointing_kwargs', 'adapter_dtype', 'format', 'loss_path', 'max_tokens_per_batch', 'sampler', 'collator'):
        assert saved[k] == mine[k], k
    # the embedded default on this CPU, each fact as it must be (not only as resolve_run says it again)
    assert {k: saved[k] for k in ('format', 'loss_path', 'max_tokens_per_batch', 'sampler', 'collator', 'adapter_dtype', 'compute_dtype')} == dict(
        format='chat_template', loss_path='chunked', max_tokens_per_batch=None, sampler='group_by_length', collator='pad',
        adapter_dtype='float32', compute_dtype='bfloat16')
    assert saved['stop_token_ids'] and saved['end_of_turn'] == ['<|im_end|>'] and saved['pad_token'] not in saved['end_of_turn']
    assert saved['train_data']['fingerprint'] == r.train_data.fingerprint and saved['config']['training']['max_steps'] == 12
    i = run('inspect', *sets(*over), rc=0)
    for fact in (saved['architecture'], f"pad {saved['pad_token']!r} (id {saved['pad_token_id']})", saved['train_data']['fingerprint'],
                 f"compute dtype {saved['compute_dtype']}", 'LoRA adapters on: ' + ', '.join(saved['lora_targets'])):
        assert fact in i.stdout, (fact, i.stdout)

def test_adapter_refuses_a_different_base(tmp_path, trained_adapter, capsys):
    "An adapter whose config now names a base of another shape is refused in one sentence, before peft sees it."
    import yaml
    from qlora_nb.config import CONFIG_NAME
    from qlora_nb.tiny import tiny_model_dir
    shutil.copytree(trained_adapter, tmp_path/'adapter')   # a copy: the session's adapter is read, never changed
    other = tiny_model_dir(num_hidden_layers=2)
    f = tmp_path/'adapter'/CONFIG_NAME
    f.write_text(yaml.safe_dump({**yaml.safe_load(f.read_text(encoding='utf-8')), 'model_name': str(other)}, allow_unicode=True), encoding='utf-8')
    err = refused_in_process(capsys, 'generate', '--adapter', tmp_path/'adapter', '--prompt', 'こんにちは', needles=('layers 4', 'now has 2'))
    assert err.count('\n') == 0, err   # one sentence

def test_merged_model_stops_where_the_run_stops(tmp_path, trained_adapter):
    "The merged model's generation config carries the run's stop ids, so plain transformers stops at the end of a turn."
    from transformers import GenerationConfig
    from qlora_nb.run import RUN_NAME
    run('merge', '--adapter', trained_adapter, '--output', tmp_path/'merged', rc=0)
    stops = json.loads((trained_adapter/RUN_NAME).read_text(encoding='utf-8'))['stop_token_ids']
    eos = GenerationConfig.from_pretrained(tmp_path/'merged').eos_token_id
    assert (eos if isinstance(eos, list) else [eos]) == stops, (eos, stops)

@pytest.mark.parametrize('method', ['mxfp4', 'fp8', 'gptq'])
def test_prequantized_checkpoint_refused(tmp_path, capsys, method):
    "A checkpoint stored MXFP4 (gpt-oss), FP8 (DeepSeek-V3) or GPTQ: one sentence with the way out before anything loads, exit 2, nothing written."
    from qlora_nb.tiny import tiny_model_dir
    m = tmp_path/'model'
    shutil.copytree(tiny_model_dir(), m)
    cfg = json.loads((m/'config.json').read_text(encoding='utf-8'))
    (m/'config.json').write_text(json.dumps({**cfg, 'quantization_config': {'quant_method': method}}), encoding='utf-8')
    err = refused_in_process(capsys, 'train', '--set', f'model_name={m}', '--set', f'result_path={tmp_path}/run', '--set', f'save_path={tmp_path}/adapter',
                             unwritten=[tmp_path/'run', tmp_path/'adapter'], needles=[f'{m}: its weights are stored quantized ({method})', "bf16 release"])
    assert ('dequantize=True' in err) == (method != 'gptq'), err
