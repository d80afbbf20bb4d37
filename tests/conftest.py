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
