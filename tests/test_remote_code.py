"""A model whose code ships in its folder (PLaMo 2's way: `auto_map` in config.json, `modeling_*.py` beside the weights), on the
`remote` replica of `qlora_nb.families`: refused in one sentence without `trust_remote_code`, nothing written; with it, inspected,
trained in 4-bit with gradient checkpointing, generating what the model computes, merged into a folder that keeps its code, and
loaded by plain peft. (tests/test_families.py runs the family matrix on it too.)"""
import json
from pathlib import Path

import pytest, torch
from conftest import refused, run, sets

from qlora_nb.families import replica_dir, replica_overrides

SETS = ['training.max_steps=8', 'training.learning_rate=2e-2', 'training.logging_steps=1', 'training.save_steps=100', 'training.disable_tqdm=true',
        'data.max_length=128', 'data.max_tokens_per_batch=null', 'training.per_device_train_batch_size=4', 'training.warmup_steps=0',
        'training.gradient_accumulation_steps=1', 'training.gradient_checkpointing=true']
CODE = ['configuration_remote_decoder.py', 'modeling_remote_decoder.py']

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "The replica trained in-process (8 steps, gradient checkpointing on): (adapter folder, summary)."
    import matplotlib; matplotlib.use('Agg')
    from qlora_nb.config import load_config
    from qlora_nb.train import train
    d = tmp_path_factory.mktemp('remote')
    s = train(load_config(overrides=[*replica_overrides('remote'), f'result_path={d}/run', f'save_path={d}/adapter', *SETS]), overwrite=True)
    return Path(s['save_path']), s

def test_refused_without_trust(tmp_path):
    "Without trust_remote_code: the one-sentence refusal, in-process and through the command line (exit code 2, nothing written)."
    from qlora_nb.config import ConfigError, load_config
    from qlora_nb.run import resolve_run
    d = replica_dir('remote')
    assert all((d/f).is_file() for f in CODE) and json.loads((d/'config.json').read_text())['auto_map']
    why = "does not know the architecture 'remote_decoder' (model_type in config.json); upgrade transformers, or set trust_remote_code: true"
    with pytest.raises(ConfigError, match=r"^model_name .* does not know the architecture 'remote_decoder'"): resolve_run(load_config(overrides=[f'model_name={d}']))
    args = sets(f'model_name={d}', f'result_path={tmp_path}/run', f'save_path={tmp_path}/adapter')
    err = refused(run('train', *args), why, unwritten=[tmp_path/'run', tmp_path/'adapter'])
    assert err.count('\n') == 0, err   # one sentence

def test_inspect():
    "With it: the skeleton is built from the folder's code, and `all-linear` finds the model's own layer names."
    from qlora_nb.config import load_config
    from qlora_nb.run import resolve_run, run_report
    r = run_report(resolve_run(load_config(overrides=replica_overrides('remote')), for_training=False))
    assert 'RemoteDecoderForCausalLM, 2 layers of width 64' in r and 'LoRA adapters on: w_in, w_out, wo, wqkv.' in r, r
    assert "generation stops at '<|plamo:eos|>', '<|plamo:op|>'" in r and 'loss plain' in r, r

def test_train_generate_merge(trained, tmp_path):
    "Trained in 4-bit with checkpointing; `generate` gives the model's greedy reply (its transformers-4 cache turned off); the merged "
    "folder keeps the code files and loads with trust_remote_code, computing what the 4-bit base + adapter computes."
    from transformers import AutoModelForCausalLM
    from qlora_nb.infer import generate, load_for_inference, merge_adapter, rel_l2
    adapter, s = trained
    assert s['loss_last'] < s['loss_first'], s
    assert json.loads((adapter/'adapter_config.json').read_text())['target_modules'] and not any((adapter/f).exists() for f in CODE)
    model, tok = load_for_inference(adapter)
    assert model.generation_config.use_cache is False   # 05_model.legacy_cache
    msgs = [{'role': 'user', 'content': 'フランスの首都はどこですか？'}]
    reply = generate(model, tok, msgs, max_new_tokens=6)
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors='pt', return_dict=True)['input_ids']
    n0, stops = ids.shape[1], set(model.generation_config.eos_token_id)
    with torch.no_grad():   # greedy, the whole sequence each step
        for _ in range(6):
            nxt = model(input_ids=ids, use_cache=False).logits[0, -1].argmax()
            ids = torch.cat([ids, nxt.view(1, 1)], 1)
            if nxt.item() in stops: break
    assert reply == tok.decode(ids[0, n0:], skip_special_tokens=True), (reply, tok.decode(ids[0, n0:]))
    out = merge_adapter(adapter, tmp_path/'merged', dtype='float32')
    assert all((out/f).is_file() for f in CODE) and json.loads((out/'config.json').read_text())['auto_map']['AutoModelForCausalLM']
    with pytest.raises(ValueError, match='trust_remote_code'): AutoModelForCausalLM.from_pretrained(out, trust_remote_code=False)
    merged = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    assert type(merged).__name__ == 'RemoteDecoderForCausalLM' and merged.generation_config.use_cache is False
    batch = tok.apply_chat_template([*msgs, {'role': 'assistant', 'content': 'パリです。'}], return_tensors='pt', return_dict=True)
    with torch.no_grad():
        ref, got = model(**batch).logits[0], merged(**batch).logits[0]
        with model.disable_adapter(): base = model(**batch).logits[0]
    assert rel_l2(ref, got) < 5e-2 and rel_l2(ref, base) > 1e-3, (rel_l2(ref, got), rel_l2(ref, base))

PLAIN = '''
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import PeftModel
base, adapter = sys.argv[1:]
m = AutoModelForCausalLM.from_pretrained(base, trust_remote_code=True)
tok = AutoTokenizer.from_pretrained(adapter)
ids = torch.tensor([tok('hello こんにちは', add_special_tokens=False)['input_ids']])
before = m(ids).logits
after = PeftModel.from_pretrained(m, adapter)(ids).logits
print(json.dumps(bool(torch.isfinite(after).all()) and not torch.equal(before, after)))
'''

def test_plain_peft(trained, tmp_path):
    "The adapter loads with plain peft on the unmodified base (its code trusted), in a process that never imports qlora_nb."
    p = run(str(replica_dir('remote')), str(trained[0]), code=PLAIN, env={'PYTHONPATH': ''}, cwd=tmp_path, rc=0)
    assert json.loads(p.stdout.strip().splitlines()[-1]) is True, p.stdout
