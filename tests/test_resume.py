"Interrupt a run (Ctrl-C, then `kill -9` in the middle of writing a checkpoint), resume it, and compare with an uninterrupted run."
import subprocess, time
from pathlib import Path
import torch
from safetensors.torch import load_file
from conftest import qlora_nb

HERE = Path(__file__).parent
SETS = ['training.max_steps=8', 'training.save_steps=2', 'training.save_total_limit=2', 'training.logging_steps=1',
        'training.per_device_train_batch_size=2', 'training.gradient_accumulation_steps=2', 'data.max_length=96',
        'training.disable_tqdm=true']

def cmd(d, name, *extra, script=None):
    sets = [f'result_path={d}/{name}/run', f'save_path={d}/{name}/adapter', *SETS]
    return qlora_nb('train', *[a for s in sets for a in ('--set', s)], *extra, script=script)

def run(args, env, timeout=300):
    p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, encoding='utf-8')
    return p.returncode, p.stdout + p.stderr

def complete(run_dir): return sorted(int(c.parent.name.split('-')[1]) for c in Path(run_dir).glob('checkpoint-*/qlora_nb_complete.json'))

def adapter(d): return load_file(Path(d)/'adapter_model.safetensors')

def test_interrupt_and_resume_gives_the_same_adapter(tmp_path, env):
    t0 = time.time()
    a = subprocess.Popen(cmd(tmp_path, 'a'), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)   # the reference, alongside
    fault = HERE/'fault_run.py'
    b = tmp_path/'b'/'run'

    rc, out = run(cmd(tmp_path, 'b', script=fault)[:2] + ['sigint', '3'] + cmd(tmp_path, 'b')[3:], env)   # Ctrl-C at the end of step 3
    assert rc == 130, out
    assert 'Interrupted at step 3' in out and 'checkpoint-3' in out, out
    assert complete(b) == [2, 3] and not (tmp_path/'b'/'adapter').exists()

    rc, out = run(cmd(tmp_path, 'b', script=fault)[:2] + ['sigkill-in-save', '6'] + cmd(tmp_path, 'b')[3:], env)  # kill -9 while checkpoint-6 is written
    assert rc == -9, out
    assert 'Resuming from' in out and 'checkpoint-3 (step 3)' in out, out
    assert (b/'checkpoint-6'/'adapter_model.safetensors').exists() and complete(b) == [3, 4]   # 6 is there, but not complete
    assert (b/'.qlora_nb.lock').exists()                                                        # a stale lock, left by the killed run

    rc, out = run(cmd(tmp_path, 'b'), env)
    assert rc == 0, out
    assert 'checkpoint-4 (step 4)' in out, out                                                  # not the half-written 6
    assert complete(b) == [6, 8] and (b/'loss.png').stat().st_size > 0 and not (b/'.qlora_nb.lock').exists()

    out_a, _ = a.communicate(timeout=300)
    assert a.returncode == 0, out_a
    assert 'Resuming' not in out_a
    wa, wb = adapter(tmp_path/'a'/'adapter'), adapter(tmp_path/'b'/'adapter')
    assert wa.keys() == wb.keys() and len(wa) > 0
    diff = max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)
    moved = max(wa[k].float().abs().max().item() for k in wa if 'lora_B' in k)   # lora_B starts at 0: it did train
    print(f"\nresume: max |adapter(uninterrupted) - adapter(Ctrl-C + kill -9 + resumed)| = {diff:.3g} "
          f"(largest lora_B weight {moved:.3g}); {time.time()-t0:.0f} s")
    assert moved > 1e-3
    assert diff < 1e-5
