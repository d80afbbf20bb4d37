#!/usr/bin/env python
"""Draw the README's loss curve (`nbs/images/loss_curve.png`) from a `qlora-nb train` run.

    python tools/loss_curve.py                  # train the embedded default in a temp folder, then plot
    python tools/loss_curve.py outputs/run      # plot a run that already exists (its result_path)

The losses are the Trainer's own log (`log_history` in the last checkpoint's `trainer_state.json`).
"""
import json, re, subprocess, sys, tempfile
from pathlib import Path

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt

OUT = Path(__file__).resolve().parents[1]/'nbs'/'images'/'loss_curve.png'


def log_history(run:Path) -> list[dict]:
    cks = sorted((c for c in run.glob('checkpoint-*') if re.fullmatch(r'checkpoint-\d+', c.name)),
                 key=lambda c: int(c.name.split('-')[1]))
    if not cks: sys.exit(f'error: {run} has no checkpoint-N folder; give the result_path of a finished run.')
    return json.loads((cks[-1]/'trainer_state.json').read_text())['log_history']


def plot(hist:list[dict], out:Path=OUT) -> Path:
    pts = [(h['step'], h['loss']) for h in hist if 'loss' in h]
    epochs = max((h.get('epoch', 0) for h in hist), default=0)
    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=100)
    ax.plot(*zip(*pts), marker='o', markersize=3)
    ax.set(xlabel='optimizer step', ylabel='training loss (assistant tokens)',
           title=f'qlora-nb train: tiny model, bundled chats, {epochs:.0f} epochs')
    ax.grid(alpha=.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, metadata={'Software': None})  # no version stamp: the same run gives the same file
    print(f'{out}: loss {pts[0][1]:.2f} -> {pts[-1][1]:.2f} over {pts[-1][0]} steps')
    return out


if __name__ == '__main__':
    if len(sys.argv) > 1: plot(log_history(Path(sys.argv[1])))
    else:
        with tempfile.TemporaryDirectory() as d:
            subprocess.run(['qlora-nb', 'train'], cwd=d, check=True)
            plot(log_history(Path(d)/'outputs'/'run'))
