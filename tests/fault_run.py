"Run `qlora-nb` with a fault injected at an optimizer step: `python fault_run.py sigint|sigkill-in-save STEP ARGS...`."
import os, signal, sys
from transformers import Trainer, TrainerCallback

kind, step, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

class Fault(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        if kind == 'sigint' and state.global_step == step: os.kill(os.getpid(), signal.SIGINT)   # as Ctrl-C does
    def on_save(self, args, state, control, **kw):
        # Runs before qlora_nb's CheckpointKeeper marks the checkpoint complete: the folder is left half-done.
        if kind == 'sigkill-in-save' and state.global_step == step: os.kill(os.getpid(), signal.SIGKILL)

_init = Trainer.__init__
def _init_with_fault(self, *a, **kw):
    _init(self, *a, **kw)
    self.callback_handler.callbacks.insert(0, Fault())
Trainer.__init__ = _init_with_fault

from qlora_nb.cli import main
main(argv)
