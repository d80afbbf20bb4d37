import os, shlex, subprocess, sys
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

def run_env(env:dict|None=None)->dict:
    "Environment of a subprocess: this checkout's qlora_nb, offline, quiet, UTF-8; then `env` (a value of None removes the variable)."
    e = {**os.environ, 'PYTHONPATH': f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", 'HF_HUB_OFFLINE': '1',
         'TOKENIZERS_PARALLELISM': 'false', 'PYTHONUNBUFFERED': '1', 'PYTHONIOENCODING': 'utf-8', 'OMP_NUM_THREADS': '1'}
    for k, v in (env or {}).items():
        if v is None: e.pop(k, None)
        else: e[k] = str(v)
    return e

def torchrun(nproc:int=1)->list[str]:
    "What starts `nproc` Python processes (a `launch` for `run`): `python` for one, `torchrun --standalone` (gloo on the CPU) for more."
    return [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}'] if nproc > 1 else [sys.executable]

def command(*args, script=None, code=None, launch=None)->list[str]:
    "`[*launch, -m qlora_nb.cli | script | -c code, *args]`: `qlora-nb ARGS` unless a script or code is given."
    what = ['-c', code] if code is not None else [str(script)] if script else ['-m', 'qlora_nb.cli']
    return [*(launch or [sys.executable]), *what, *map(str, args)]

def _tail(s, n=4000): return s if len(s or '') <= n else '…' + s[-n:]

def said(p)->str:
    "A finished process's command, exit code and (the ends of) its output: the message of a failed assertion."
    return (f"$ {shlex.join(map(str, p.args))}\nexit code {p.returncode}\n--- stdout ---\n{_tail(p.stdout)}\n"
            f"--- stderr ---\n{_tail(p.stderr)}")

def run(*args, script=None, code=None, launch=None, env=None, cwd=None, input=None, timeout=300, rc=None)->subprocess.CompletedProcess:
    """Run `qlora-nb ARGS` (or `script ARGS`, or `python -c code ARGS`; under `launch`, e.g. `torchrun(2)`) in a subprocess with
    `run_env(env)`, in `cwd`, `input` on its stdin; text (UTF-8) stdout and stderr captured. `rc`: the exit code it must give
    (asserted, with its output in the message); None: not checked."""
    p = subprocess.run(command(*args, script=script, code=code, launch=launch), env=run_env(env), cwd=cwd, input=input,
                       capture_output=True, text=True, encoding='utf-8', errors='replace', timeout=timeout)
    if rc is not None: assert p.returncode == rc, said(p)
    return p

def refused(p, *needles, unwritten=())->str:
    """Assert that a finished `run` refused as a user's mistake should be refused: exit code 2, no traceback, an `error: `
    sentence (or list of problems) holding every one of `needles`, and none of the paths `unwritten` created. Whatever
    else the process printed before it (a library's notice, progress) is not judged. Returns the error text."""
    assert p.returncode == 2, said(p)
    assert 'Traceback' not in p.stderr, said(p)
    lines = p.stderr.splitlines()
    starts = [i for i, l in enumerate(lines) if l.startswith('error: ')]
    assert starts, said(p)
    err = '\n'.join(lines[starts[-1]:])   # the error (a sentence, or a list of problems) comes last
    for n in needles: assert n in err, (n, err)
    for u in unwritten: assert not Path(u).exists(), f'{u} was written before the error:\n{err}'
    return err

_SPAWNED = []

def spawn(*args, script=None, code=None, launch=None, env=None, cwd=None)->subprocess.Popen:
    """`run`'s command started in the background, stdout and stderr together in one pipe; `finish` waits for it.
    One still running when its test ends is killed."""
    p = subprocess.Popen(command(*args, script=script, code=code, launch=launch), env=run_env(env), cwd=cwd,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding='utf-8', errors='replace')
    _SPAWNED.append(p)
    return p

def finish(p:subprocess.Popen, timeout=300, rc=None)->subprocess.CompletedProcess:
    "Wait for a `spawn`ed process: its output (stdout and stderr together) as `stdout`; `rc` as in `run`."
    try: out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill(); out, _ = p.communicate()
        raise AssertionError(f"timed out after {timeout} s:\n{_tail(out)}")
    done = subprocess.CompletedProcess(p.args, p.returncode, out, '')
    if rc is not None: assert done.returncode == rc, said(done)
    return done

@pytest.fixture(autouse=True)
def _reap_spawned():
    "Kill what a test `spawn`ed and left running (it failed before `finish`)."
    yield
    while _SPAWNED:
        p = _SPAWNED.pop()
        if p.poll() is None: p.kill(); p.communicate()

def pytest_configure(config):
    config.addinivalue_line('markers', 'cuda: needs NVIDIA GPUs (skipped without them)')
    config.addinivalue_line('markers', 'slow: a long end-to-end run; CI runs it, `pytest -m "not slow"` leaves it out locally')

# Shared by the resume tests (tests/test_resume.py, tests/test_distributed_resume.py).
FAULT = REPO/'tests'/'fault_run.py'

def sets(*overrides)->list[str]:
    "`--set` arguments for `qlora-nb train`."
    return [a for s in overrides for a in ('--set', s)]

def train_adapter(d, overrides)->Path:
    "Train through `qlora-nb train` into `d/run` and `d/adapter` with `overrides` (`key=value`); return the adapter folder."
    run('train', *sets(f'result_path={d}/run', f'save_path={d}/adapter', *overrides), rc=0)
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

def refused_in_process(capsys, *args, unwritten=(), needles=())->str:
    """`refused`, for `qlora-nb ARGS` run in this process through `cli.main` (no torch subprocess to start): the exit code 2,
    no traceback, the `error: ` sentence holding `needles`, nothing of `unwritten` created. Returns the error text."""
    from qlora_nb.cli import main
    args = [str(a) for a in args]
    try: main(args); code = 0
    except SystemExit as e: code = e.code
    out = capsys.readouterr()
    return refused(subprocess.CompletedProcess(['qlora-nb', *args], code, out.out, out.err), *needles, unwritten=unwritten)

# One adapter for the whole test session: the export, inference and resolved-run tests read the same 12-step adapter
# instead of each training its own. Tests only read it; one that changes an adapter copies it first.
ADAPTER_SETS = ['training.max_steps=12', 'training.learning_rate=5e-3', 'training.save_steps=100', 'training.per_device_train_batch_size=4',
                'data.max_length=96', 'training.disable_tqdm=true']

@pytest.fixture(scope='session')
def trained_adapter(tmp_path_factory)->Path:
    "The session's 12-step adapter (`qlora-nb train` with ADAPTER_SETS), trained once; its run folder is beside it (`../run`)."
    d = tmp_path_factory.mktemp('shared_adapter')
    a = train_adapter(d, ADAPTER_SETS)
    assert (d/'run'/'loss.png').stat().st_size > 0
    return a

def adapter_overrides(adapter:Path)->list[str]:
    "The `key=value` overrides the session's adapter was trained with (ADAPTER_SETS and its paths)."
    return [f'result_path={adapter.parent}/run', f'save_path={adapter}', *ADAPTER_SETS]
