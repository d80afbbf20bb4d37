"""Execute notebooks in place so their stored outputs are current, then `nbdev_clean`.

    python tools/run_notebooks.py nbs/01_records.ipynb ...            # skips `#| slow` / `cuda` / `notest` / `eval: false` cells
    python tools/run_notebooks.py --slow nbs/90_benchmark.ipynb    # runs `#| slow` cells too (minutes: benchmarks)

A skipped cell keeps the outputs it had, so a benchmark's measured figures stay until it is run again on purpose.
"""
import argparse, re, subprocess, sys, time
from pathlib import Path
import nbformat
from nbclient import NotebookClient

def _flags(cell)->set[str]:
    out = set()
    for line in cell.source.splitlines():
        if not line.startswith('#|'): break
        out |= set(re.findall(r'[\w:]+', line[2:].replace('eval: false', 'eval:false')))
    return out

def run(path:Path, slow:bool=False, timeout:int=3600):
    nb = nbformat.read(path, as_version=4)
    skip = {'cuda', 'notest', 'eval:false'} | (set() if slow else {'slow'})
    client = NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}})
    t0 = time.time()
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == 'code' and not (_flags(cell) & skip): client.execute_cell(cell, i)
    nbformat.write(nb, path)
    print(f"{path}: executed in {time.time()-t0:.0f} s", flush=True)

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('notebooks', nargs='+', type=Path)
    p.add_argument('--slow', action='store_true', help='run #| slow cells too')
    a = p.parse_args()
    for nb in a.notebooks: run(nb, a.slow)
    subprocess.run(['nbdev_clean'], check=True)
