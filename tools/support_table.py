"""Render the family matrix that `pytest tests/test_families.py` writes (nbs/family_matrix.json) into the support table
of nbs/index.ipynb, then regenerate README.md from it.

    python tools/support_table.py            # after: HF_HUB_OFFLINE=1 pytest tests/test_families.py
"""
import json, re, subprocess, sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START, END = '<!-- support-table -->', '<!-- /support-table -->'

def main():
    sys.path.insert(0, str(REPO))
    from qlora_nb.families import support_table
    results = json.loads((REPO/'nbs'/'family_matrix.json').read_text(encoding='utf-8'))['families']
    table = support_table(results)
    p = REPO/'nbs'/'index.ipynb'
    nb = json.loads(p.read_text(encoding='utf-8'))
    cell = next(c for c in nb['cells'] if START in ''.join(c['source']))
    src = ''.join(cell['source'])
    src = re.sub(re.escape(START) + '.*?' + re.escape(END), lambda m: f'{START}\n{table}\n{END}', src, flags=re.S)
    cell['source'] = src.splitlines(keepends=True)
    p.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
    md = subprocess.run([sys.executable, '-m', 'jupyter', 'nbconvert', '--to', 'markdown', '--stdout', str(p)],
                        capture_output=True, text=True, check=True).stdout
    (REPO/'README.md').write_text(md, encoding='utf-8')
    print(f"support table: {len(results)} families -> {p.relative_to(REPO)} and README.md")

if __name__ == '__main__': main()
