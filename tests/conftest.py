import os, subprocess, sys
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parents[1]

def run_env():
    "Environment of a subprocess: this checkout's qlora_nb, offline, quiet."
    return {**os.environ, 'PYTHONPATH': f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", 'HF_HUB_OFFLINE': '1',
            'TOKENIZERS_PARALLELISM': 'false', 'PYTHONUNBUFFERED': '1', 'OMP_NUM_THREADS': '1'}

def qlora_nb(*args, script=None, **kw):
    "`[python, -m qlora_nb.cli | script, *args]` as a Popen argument list."
    return [sys.executable, *( [str(script)] if script else ['-m', 'qlora_nb.cli'] ), *map(str, args)]

@pytest.fixture(scope='session')
def env(): return run_env()
