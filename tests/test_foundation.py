"End-to-end checks of the foundation: `qlora-nb train` on the embedded default and on bad input."
import json, re, shutil, textwrap
import pytest, torch
from conftest import refused_in_process, run, sets

@pytest.mark.slow
def test_embedded_default_trains_and_halves_loss(tmp_path):
    r = run('train', cwd=tmp_path, timeout=1500, rc=0)
    m = re.search(r'Loss ([\d.]+) → ([\d.]+)', r.stdout)
    assert m, r.stdout[-2000:]
    first, last = map(float, m.groups())
    assert last <= first / 2, (first, last)
    adapter, run_dir = tmp_path/'outputs'/'adapter', tmp_path/'outputs'/'run'
    assert {'adapter_config.json', 'adapter_model.safetensors', 'tokenizer.json', 'qlora_nb_config.yaml'} <= {p.name for p in adapter.iterdir()}
    assert list(run_dir.glob('checkpoint-*/trainer_state.json')), 'no complete checkpoint in result_path'
    assert 'qlora-nb generate --adapter outputs/adapter' in r.stdout
    # The adapter loads with plain transformers + peft, no qlora_nb import.
    base = json.loads((adapter/'adapter_config.json').read_text())['base_model_name_or_path']
    code = textwrap.dedent(f'''
        import sys, torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from peft import PeftModel
        m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({base!r}), {str(adapter)!r})
        t = AutoTokenizer.from_pretrained({str(adapter)!r})
        ids = t.apply_chat_template([{{"role": "user", "content": "日本の首都は？"}}], add_generation_prompt=True, return_tensors="pt", return_dict=True)
        out = m.generate(**ids, max_new_tokens=5, do_sample=False)
        assert t.pad_token != t.eos_token
        assert not any(k.startswith("qlora_nb") for k in sys.modules)
        print("OK", out.shape[1] > ids["input_ids"].shape[1])
    ''')
    r2 = run(code=code, cwd=tmp_path, rc=0)
    assert 'OK True' in r2.stdout, r2.stdout

# The embedded default's first four logged losses on the CPU: `qlora-nb train` with no config, stopped after 4 optimizer
# steps (so the learning rate decays over 4 steps), logging every step. The tiny model is built from a fixed seed, and the
# sample chats, their batching and masking, the LoRA initialisation, NF4 quantization and the optimizer are deterministic
# on the CPU, so these are exact to float32 rounding, run after run and in a fresh cache. A change that moves them on
# purpose (the tiny model or its tokenizer, the sample chats, tiny.yaml, the default preset, the loss, a new torch or
# transformers) re-pins them: run this test, copy the `logged` list its failure prints, and say in the commit why they moved.
OFFLINE_NOTICE = 'Skipping publisher trust check'
FIRST_LOSSES = [8.403952598571777, 8.177835464477539, 7.606501579284668, 7.419220924377441]

def test_embedded_default_first_losses_pinned(tmp_path):
    p = run('train', *sets(f'result_path={tmp_path}/run', f'save_path={tmp_path}/adapter', 'training.max_steps=4',
                           'training.logging_steps=1'), cwd=tmp_path, rc=0)
    assert OFFLINE_NOTICE not in p.stdout + p.stderr, p.stderr   # kernels' offline notice, on every 4-bit load (qlora_nb/__init__.py)
    last = max(tmp_path.glob('run/checkpoint-*/trainer_state.json'), key=lambda f: int(f.parent.name.split('-')[1]))
    logged = [h['loss'] for h in json.loads(last.read_text(encoding='utf-8'))['log_history'] if 'loss' in h]
    assert len(logged) == len(FIRST_LOSSES), logged
    torch.testing.assert_close(torch.tensor(logged, dtype=torch.float64), torch.tensor(FIRST_LOSSES, dtype=torch.float64),
                               rtol=1e-5, atol=1e-5, msg=lambda m: f'{m}\nlogged: {logged}')

# Refusals run in this process through `cli.main` (no torch subprocess each): exit 2, one sentence, nothing under ./outputs.
@pytest.fixture
def refuses(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    return lambda *args, needles=(): refused_in_process(capsys, *args, needles=needles, unwritten=[tmp_path/'outputs'])

def test_typo_in_key_refused_before_loading(refuses):
    refuses('train', '--set', 'training.learnig_rate=1e-4', needles=("'training.learnig_rate' is not a known key", "Did you mean 'learning_rate'?"))

def test_wrong_type_and_impossible_value_refused(tmp_path, refuses):
    cfg = tmp_path/'run.yaml'
    cfg.write_text('training:\n  num_train_epochs: "three"\n', encoding='utf-8')
    refuses('train', cfg, needles=('run.yaml', "'training.num_train_epochs'", 'must be float'))
    refuses('train', '--set', 'lora.r=0', needles=("'lora.r' is 0", 'greater than 0'))

def test_bad_data_refused_naming_file_and_line(tmp_path, refuses):
    data = tmp_path/'chats.jsonl'
    data.write_text('{"messages": [{"role": "user", "content": "こんにちは"}, {"role": "assistant", "content": "こんにちは！"}]}\n'
                    '{"messages": [{"role": "user", "content": "hi"},\n', encoding='utf-8')
    refuses('train', '--set', f'training_data_json_path={data}', needles=('chats.jsonl, line 2', 'invalid JSON'))

def test_missing_target_modules_refused(refuses):
    refuses('train', '--set', 'lora.target_modules=[query_key_value]', needles=("no linear layer named 'query_key_value'", 'q_proj'))

def test_unsafe_model_folders_are_refused(tmp_path, refuses):
    from qlora_nb.run import model_path
    m = tmp_path/'m'; shutil.copytree(model_path('builtin:tiny'), m)
    (m/'model.safetensors').rename(m/'pytorch_model.bin')
    refuses('train', '--set', f'model_name={m}', '--set', f'result_path={tmp_path}/run', needles=('allow_pickle',))
    assert not (tmp_path/'run').exists() or not any((tmp_path/'run').glob('checkpoint-*'))

@pytest.mark.parametrize('name,says', [('/no/such/folder', 'no such folder'), ('EMPTY', 'no config.json'),
                                        ('qlora-nb/not-cached', 'not in the local cache'), ('UNKNOWN', 'does not know the architecture')])
def test_model_names(name, says, tmp_path, capsys):
    "Each way a model name can be wrong: one sentence and exit 2, before the data is read (here: a data file that is not there)."
    from qlora_nb.cli import main
    if name == 'EMPTY': name = str(tmp_path)
    if name == 'UNKNOWN': (tmp_path/'config.json').write_text('{"model_type": "llama99"}'); name = str(tmp_path)
    for cmd in ('train', 'inspect'):
        with pytest.raises(SystemExit) as e: main([cmd, '--set', f'model_name={name}', '--set', 'training_data_json_path=/no/data.jsonl',
                                                   '--set', f'result_path={tmp_path}/run'])
        err = capsys.readouterr().err
        assert e.value.code == 2 and says in err and 'data' not in err.split(says)[0][-20:] and err.count('\n') == 1, err

def test_seed_preset_fp16_refused_on_cpu_with_the_fix(tmp_path, refuses):
    cfg = tmp_path/'seed.yaml'
    cfg.write_text('preset: seed\n', encoding='utf-8')
    refuses('train', cfg, needles=('training.fp16', 'training.bf16=true'))

def test_seed_preset_trains_as_written_but_for_precision(tmp_path):
    # A config of its own: the embedded default (tiny.yaml) tunes `training:` for the default preset.
    cfg = tmp_path/'seed.yaml'
    cfg.write_text('model_name: builtin:tiny\ntraining_data_json_path: builtin:sample_chats\npreset: seed\n', encoding='utf-8')
    run('train', cfg, '--set', 'training.fp16=false', '--set', 'training.bf16=true',
        '--set', 'training.max_steps=2', '--set', 'data.max_length=128', cwd=tmp_path, rc=0)
    ac = json.loads((tmp_path/'outputs'/'adapter'/'adapter_config.json').read_text())
    assert sorted(ac['target_modules']) == ['q_proj', 'v_proj'] and ac['r'] == 16 and ac['lora_alpha'] == 32
    import yaml
    saved = yaml.safe_load((tmp_path/'outputs'/'adapter'/'qlora_nb_config.yaml').read_text(encoding='utf-8'))
    assert saved['training']['learning_rate'] == 2e-5 and saved['tokenizer']['pad_token'] == 'eos'

def test_only_the_offline_notice_is_dropped():
    "qlora_nb drops kernels' offline notice and nothing else that logger (or another) says."
    code = """
import logging, warnings, qlora_nb
log = logging.getLogger('kernels._internals.hf_hub')
log.warning("Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes' because Hugging Face Hub is in offline mode.")
log.warning('a real kernels warning')
logging.getLogger('bitsandbytes').warning('a real bitsandbytes warning')
warnings.warn('a real Python warning')
"""
    p = run(code=code, rc=0)
    assert OFFLINE_NOTICE not in p.stderr, p.stderr
    for w in ('a real kernels warning', 'a real bitsandbytes warning', 'a real Python warning'): assert w in p.stderr, (w, p.stderr)
