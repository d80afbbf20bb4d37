import os, subprocess, sys
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parents[1]

# Nothing comes from a model hub in tests: the tiny model is built locally by qlora_nb.tiny.
os.environ['HF_HUB_OFFLINE'] = '1'
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')

@pytest.fixture(scope='session', autouse=True)
def _own_cache(tmp_path_factory):
    "Build the tiny model into a fresh cache for this test session (subprocesses inherit it)."
    old = os.environ.get('QLORA_NB_CACHE')
    os.environ['QLORA_NB_CACHE'] = str(tmp_path_factory.mktemp('qlora_nb_cache'))
    yield
    if old is None: os.environ.pop('QLORA_NB_CACHE', None)
    else: os.environ['QLORA_NB_CACHE'] = old

def run_env():
    "Environment of a subprocess: this checkout's qlora_nb, offline, quiet."
    return {**os.environ, 'PYTHONPATH': f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", 'HF_HUB_OFFLINE': '1',
            'TOKENIZERS_PARALLELISM': 'false', 'PYTHONUNBUFFERED': '1', 'OMP_NUM_THREADS': '1'}

def qlora_nb(*args, script=None, **kw):
    "`[python, -m qlora_nb.cli | script, *args]` as a Popen argument list."
    return [sys.executable, *( [str(script)] if script else ['-m', 'qlora_nb.cli'] ), *map(str, args)]

@pytest.fixture(scope='session')
def env(): return run_env()

def pytest_configure(config):
    config.addinivalue_line('markers', 'cuda: needs NVIDIA GPUs (skipped without them)')

# Shared by the resume tests (tests/test_resume.py, tests/test_distributed_resume.py).
FAULT = REPO/'tests'/'fault_run.py'

def sets(*overrides)->list[str]:
    "`--set` arguments for `qlora-nb train`."
    return [a for s in overrides for a in ('--set', s)]

def train_adapter(d, overrides, env)->Path:
    "Train through `qlora-nb train` into `d/run` and `d/adapter` with `overrides` (`key=value`); return the adapter folder."
    p = subprocess.run(qlora_nb('train', *sets(f'result_path={d}/run', f'save_path={d}/adapter', *overrides)),
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    return Path(d)/'adapter'

def first_chats(path, n:int):
    "Write the first `n` bundled sample chats to `path` (JSONL); return the path."
    import json
    from qlora_nb.tiny import read_sample_chats
    Path(path).write_text(''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in read_sample_chats()[:n]), encoding='utf-8')
    return Path(path)

def adapter_weights(d)->dict:
    "The tensors of `d/adapter_model.safetensors` (an adapter folder or a checkpoint)."
    from safetensors.torch import load_file
    return load_file(Path(d)/'adapter_model.safetensors')

def rel_diff(a:dict, b:dict)->float:
    "max |a - b| / max |a| over all tensors of two adapters with the same keys."
    assert a.keys() == b.keys() and len(a) > 0, (sorted(a)[:3], sorted(b)[:3])
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a) / max(a[k].float().abs().max().item() for k in a)

def complete_steps(run_dir)->list[int]:
    "Steps of the complete checkpoints under a result_path."
    return sorted(int(c.parent.name.split('-')[1]) for c in Path(run_dir).glob('checkpoint-*/qlora_nb_complete.json'))
