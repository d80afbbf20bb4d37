"Imports point one way: each module of qlora_nb imports only the modules before it in LAYERS (module level or inside a function)."
import ast, subprocess, sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1]/'qlora_nb'

# The order data flows in, lowest first. `formats` reads what a data file holds (every kind, every format) for `records`, which checks it. `files` and `tiny` sit below `records` and `run` because those resolve the
# `builtin:` names (the bundled chats, the tiny model) through them; `bench` is a tool above every command but `cli`,
# which reaches it only through the `bench` subcommand.
LAYERS = ['config', 'files', 'formats', 'tiny', 'records', 'template', 'run', 'tokenize', 'batching', 'model', 'loss', 'train',
          'distributed', 'infer', 'export', 'eval', 'families', 'bench', 'cli']

# (importer, imported): reason. An import that points upward is a fault unless it is listed here, with why.
ALLOWED_UPWARD = {}

def package_imports(path:Path)->list[tuple[str, int, bool]]:
    "`(module, line, at_module_level)` for every import of a qlora_nb module in the file at `path`."
    tree, out = ast.parse(path.read_text(encoding='utf-8')), []
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom):
            if node.level == 1: base = node.module or ''
            elif node.level == 0 and node.module and (node.module == 'qlora_nb' or node.module.startswith('qlora_nb.')):
                base = node.module[len('qlora_nb.'):] if node.module != 'qlora_nb' else ''
            else: continue
            names = [base.split('.')[0]] if base else [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name.split('.')[1] for a in node.names if a.name.startswith('qlora_nb.')]
        out += [(n, node.lineno, id(node) in top) for n in names]
    return out

def modules()->list[str]: return sorted(p.stem for p in PKG.glob('*.py') if not p.stem.startswith('_'))

def test_every_module_has_a_layer():
    assert set(modules()) == set(LAYERS), f"modules not in LAYERS: {set(modules()) - set(LAYERS)}; in LAYERS but gone: {set(LAYERS) - set(modules())}"

def test_imports_point_down():
    bad = []
    for m in modules():
        for dep, line, _ in package_imports(PKG/f'{m}.py'):
            if dep not in LAYERS: bad.append(f"qlora_nb/{m}.py:{line} imports qlora_nb.{dep}, which is not in LAYERS")
            elif dep != m and LAYERS.index(dep) > LAYERS.index(m) and (m, dep) not in ALLOWED_UPWARD:
                bad.append(f"qlora_nb/{m}.py:{line} imports qlora_nb.{dep}, which comes after {m} in LAYERS")
    assert not bad, '\n'.join(bad)

def test_bench_only_through_its_subcommand():
    "The benchmark is a tool: no module imports it at import time, and only `cli` (its `bench` subcommand) imports it at all."
    bad = [f"qlora_nb/{m}.py:{line}" for m in modules() if m != 'bench'
           for dep, line, top in package_imports(PKG/f'{m}.py') if dep == 'bench' and (top or m != 'cli')]
    assert not bad, f"bench imported outside the bench subcommand at {', '.join(bad)}"

def test_cli_imports_light():
    code = "import sys, qlora_nb.cli; print(sorted(m for m in ('qlora_nb.bench', 'trl') if m in sys.modules))"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=PKG.parent)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == '[]', r.stdout

def test_the_check_finds_an_upward_import(tmp_path):
    p = tmp_path/'records.py'
    p.write_text("from .config import ConfigError\ndef f():\n    from qlora_nb.train import train\n    import qlora_nb.cli\n", encoding='utf-8')
    assert package_imports(p) == [('config', 1, True), ('train', 3, False), ('cli', 4, False)]
