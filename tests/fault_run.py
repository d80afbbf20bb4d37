"""Run `qlora-nb` with a fault injected at an optimizer step: `python fault_run.py KIND STEP ARGS...` (also under torchrun).

KIND: `none`; `sigint` (Ctrl-C at the end of step STEP); `sigkill` (kill -9 at the end of step STEP, between checkpoints);
`sigkill-after-save` (kill -9 right after checkpoint STEP is complete); `sigkill-in-save` (kill -9 while checkpoint STEP is
being written, before it is marked complete).
Environment: FAULT_RANK (only that rank faults; default: every rank), SLOW_PREPARE (seconds the main process waits before
it prepares result_path, e.g. deletes for --overwrite), DUMP_DIR (each rank writes rank<R>.pt after training: steps,
resumed_from, world_size, backend, adapter weights), BATCH_LOG (each rank appends one JSON line per micro-batch: step and rows).
"""
import functools, json, os, signal, sys, time
from pathlib import Path
from transformers import Trainer, TrainerCallback

kind, step, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rank = int(os.environ.get('RANK', 0))
faulty = os.environ.get('FAULT_RANK') in (None, str(rank))

class Fault(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        if not faulty or state.global_step != step: return
        if kind == 'sigint': os.kill(os.getpid(), signal.SIGINT)   # as Ctrl-C does
        if kind == 'sigkill': os.kill(os.getpid(), signal.SIGKILL)
    def on_save(self, args, state, control, **kw):
        # Runs before qlora_nb's CheckpointKeeper marks the checkpoint complete: the folder is left half-done.
        if faulty and kind == 'sigkill-in-save' and state.global_step == step: os.kill(os.getpid(), signal.SIGKILL)

class AfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kw):
        # Runs after CheckpointKeeper: the checkpoint is complete, nothing after it has happened.
        if faulty and kind == 'sigkill-after-save' and state.global_step == step: os.kill(os.getpid(), signal.SIGKILL)

_init = Trainer.__init__
def _init_with_fault(self, *a, **kw):
    _init(self, *a, **kw)
    self.callback_handler.callbacks.insert(0, Fault())
    self.callback_handler.callbacks.append(AfterSave())
Trainer.__init__ = _init_with_fault

import torch
import qlora_nb.train as T

if os.environ.get('SLOW_PREPARE'):
    _prepare = T._prepare_result_path
    def _slow_prepare(*a, **kw):
        time.sleep(float(os.environ['SLOW_PREPARE'])); return _prepare(*a, **kw)
    T._prepare_result_path = _slow_prepare

if os.environ.get('BATCH_LOG'):
    _step = T.QLoRATrainer.training_step
    def _logged_step(self, model, inputs, *a, **kw):
        ids, m = inputs['input_ids'], inputs.get('attention_mask')
        rows = [r[k.bool()].tolist() for r, k in zip(ids, m)] if m is not None else ids.tolist()
        with open(Path(os.environ['BATCH_LOG'])/f'rank{rank}.jsonl', 'a', encoding='utf-8') as f:
            f.write(json.dumps({'step': self.state.global_step + 1, 'epoch': int(self.state.epoch or 0), 'rows': rows}) + '\n')
        return _step(self, model, inputs, *a, **kw)
    T.QLoRATrainer.training_step = _logged_step

if os.environ.get('DUMP_DIR'):
    _train = T.train
    @functools.wraps(_train)   # the CLI reads `train`'s options through the wrapper
    def _dumped(cfg, **kw):
        import torch.distributed as dist
        from peft import get_peft_model_state_dict
        s = _train(cfg, **kw)
        on = dist.is_initialized()
        torch.save(dict(weights={k: v.detach().float().cpu() for k, v in get_peft_model_state_dict(s['trainer'].model).items()},
                        world_size=dist.get_world_size() if on else 1, backend=dist.get_backend() if on else None,
                        steps=s['steps'], resumed_from=s['resumed_from']),
                   Path(os.environ['DUMP_DIR'])/f'rank{rank}.pt')
        return s
    T.train = _dumped

from qlora_nb.cli import main
main(argv)
