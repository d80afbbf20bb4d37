#!/usr/bin/env python
"""The tested set of versions (`constraints.txt`), and the newest releases checked on purpose.

    python tools/lock.py              # newest releases: a fresh venv installed WITHOUT the constraints, the tests run in it,
                                      # and what moved against constraints.txt reported
    python tools/lock.py --write      # the same; when the tests pass, constraints.txt is rewritten from that venv
    python tools/lock.py --fast       # a quick subset of the tests instead of the README's test command

`.ci/run` and the README's test command install with `-c constraints.txt`, so a fresh clone tests exactly what was
tested; `settings.ini` keeps ranges for users. Run this before regenerating the lock, read what moved and what broke,
pin in settings.ini (with the reason) what must be pinned, and only then `--write`. torch is the one package installed
apart, first, at the version CI uses (`--torch`): a bare `torch` requirement would pull a multi-GB CUDA build.
"""
import argparse, configparser, os, re, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT/'constraints.txt'
FAST = ['tests/test_foundation.py', 'tests/test_data_validation.py', 'tests/test_resolved_run.py', 'tests/test_export.py']
HEADER = """# The exact versions the test suite last passed with: `pip install -c constraints.txt -e ".[dev,docs]"`.
# Written by `python tools/lock.py --write` (a fresh venv, the newest releases, the tests green); see that script.
# Users install the ranges of settings.ini; this file is what CI and the README's test command install.
"""


def extras() -> list[str]:
    "Every extra that settings.ini defines (`NAME_requirements`), so the lock covers all of them."
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(ROOT/'settings.ini', encoding='utf-8')
    return sorted(k.removesuffix('_requirements') for k in cfg['DEFAULT'] if k.endswith('_requirements') and k != 'requirements')


def sh(*cmd, env=None, **kw) -> subprocess.CompletedProcess:
    print('$', ' '.join(map(str, cmd)), flush=True)
    return subprocess.run(list(map(str, cmd)), cwd=ROOT, env={**os.environ, **(env or {})}, **kw)


def pins(text:str) -> dict:
    "`name -> version` of `pip freeze` or constraints.txt lines (local labels such as `+cpu` dropped: PyPI has none)."
    out = {}
    for line in text.splitlines():
        m = re.match(r'^([A-Za-z0-9_.\-]+)==([^\s;#]+)', line.strip())
        if m: out[m[1].lower().replace('_', '-')] = m[2].split('+')[0]
    return out


def moved(old:dict, new:dict) -> list[str]:
    "What changed from the lock to the fresh venv, one line a package."
    lines = [f'  {k}: {old[k]} -> {new[k]}' for k in sorted(old.keys() & new.keys()) if old[k] != new[k]]
    lines += [f'  {k}: new, {new[k]}' for k in sorted(new.keys() - old.keys())]
    lines += [f'  {k}: gone (was {old[k]})' for k in sorted(old.keys() - new.keys())]
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--write', action='store_true', help='rewrite constraints.txt when the tests pass')
    ap.add_argument('--fast', action='store_true', help=f'run {", ".join(FAST)} only')
    ap.add_argument('--venv', default='/tmp/qlora-nb-newest', help='the fresh venv (removed first)')
    ap.add_argument('--torch', default=pins(LOCK.read_text()).get('torch', '2.13.0') if LOCK.exists() else '2.13.0')
    a = ap.parse_args()
    if a.write and a.fast: ap.error('--write needs the whole suite to have passed; drop --fast')
    t0, venv = time.time(), Path(a.venv)
    shutil.rmtree(venv, ignore_errors=True)
    sh(sys.executable, '-m', 'venv', venv, check=True)
    py = venv/'bin'/'python'
    sh(py, '-m', 'pip', 'install', '-q', '--upgrade', 'pip', check=True)
    sh(py, '-m', 'pip', 'install', '-q', f'torch=={a.torch}', check=True)
    sh(py, '-m', 'pip', 'install', '-q', '-e', f'.[{",".join(extras())}]', check=True)
    freeze = sh(py, '-m', 'pip', 'freeze', '--exclude-editable', capture_output=True, text=True, check=True).stdout
    new, old = pins(freeze), pins(LOCK.read_text()) if LOCK.exists() else {}
    diff = moved(old, new)
    print(f"\nNewest releases against {LOCK.name}:" + ('\n' + '\n'.join(diff) if diff else ' nothing moved.'), flush=True)
    env = {'PATH': f"{venv/'bin'}{os.pathsep}{os.environ['PATH']}", 'VIRTUAL_ENV': str(venv), 'HF_HUB_OFFLINE': '1',
           'TOKENIZERS_PARALLELISM': 'false'}
    tests = [[py, '-m', 'pytest', *FAST, '-q', '-p', 'no:cacheprovider']] if a.fast else \
            [[venv/'bin'/'nbdev_test'], [py, '-m', 'pytest', '-n', '2', '--dist', 'loadfile', 'tests/', '-q', '-p', 'no:cacheprovider']]
    ok = all(sh(*t, env=env).returncode == 0 for t in tests)
    print(f"\nTests on the newest releases: {'passed' if ok else 'FAILED'} ({time.time()-t0:.0f} s in all).")
    if a.write and ok:
        LOCK.write_text(HEADER + ''.join(f'{k}=={v}\n' for k, v in sorted(new.items())), encoding='utf-8')
        print(f"Wrote {LOCK.name}: {len(new)} packages.")
    elif a.write: print(f"{LOCK.name} left as it was: fix what broke (or pin it in settings.ini), then run again.")
    sys.exit(0 if ok else 1)


if __name__ == '__main__': main()
