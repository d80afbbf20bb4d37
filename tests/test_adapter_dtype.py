"The adapters' dtype is decided once, by `resolve_run`, for every mode (one device, DDP, FSDP); `load_model` makes it so and nothing after it casts again."
import dataclasses
import pytest
import torch

MODES = {'single': {}, 'ddp': {'WORLD_SIZE': '2', 'RANK': '0', 'LOCAL_RANK': '0'}, 'fsdp': {'ACCELERATE_USE_FSDP': 'true'}}

def trainable_dtypes(model)->set: return {p.dtype for p in model.parameters() if p.requires_grad}

@pytest.mark.parametrize('mode', MODES)
def test_adapter_dtype_of_each_mode(mode, monkeypatch, tmp_path):
    "float32 on one device and under DDP (as accelerate's env for a DDP process has it); the compute dtype under FSDP (`ACCELERATE_USE_FSDP`, as accelerate sets it)."
    for k, v in MODES[mode].items(): monkeypatch.setenv(k, v)
    from qlora_nb.config import load_config
    from qlora_nb.run import resolve_run
    from qlora_nb.model import load_model
    run = resolve_run(load_config(overrides=[f'result_path={tmp_path}/run', f'save_path={tmp_path}/adapter']))
    want = 'bfloat16' if mode == 'fsdp' else 'float32'
    assert (run.adapter_dtype, run.fsdp, run.compute_dtype) == (want, mode == 'fsdp', 'bfloat16')
    assert run.to_dict()['adapter_dtype'] == want                      # saved beside the adapter as decided
    assert trainable_dtypes(load_model(run)) == {getattr(torch, want)}
    if mode == 'fsdp': assert (run.upcast_unquantized, run.loss_path) == (False, 'plain')   # one dtype per flat tensor; no chunked loss

def test_the_trainer_keeps_the_runs_adapter_dtype(tmp_path):
    "`make_trainer` hands the Trainer the adapters as `load_model` made them: a run deciding bf16 adapters trains bf16 adapters."
    from qlora_nb.config import load_config
    from qlora_nb.run import resolve_run
    from qlora_nb.tokenize import build_datasets
    from qlora_nb.train import make_trainer
    run = resolve_run(load_config(overrides=[f'result_path={tmp_path}/run', f'save_path={tmp_path}/adapter']))
    sets = build_datasets(run, log=lambda line: None)
    assert trainable_dtypes(make_trainer(run, sets).model) == {torch.float32}
    assert trainable_dtypes(make_trainer(dataclasses.replace(run, adapter_dtype='bfloat16'), sets).model) == {torch.bfloat16}
