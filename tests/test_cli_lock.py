"A second run on a result_path in use is refused before anything is loaded."
import os, socket, subprocess
from conftest import qlora_nb

def test_second_run_on_same_result_path_is_refused(tmp_path, env):
    run = tmp_path/'run'; run.mkdir()
    (run/'.qlora_nb.lock').write_text(f'{os.getpid()} {socket.gethostname()}\n')   # held by a live process: this one
    p = subprocess.run(qlora_nb('train', '--set', f'result_path={run}', '--set', f'save_path={tmp_path}/adapter'),
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    assert f'another run (PID {os.getpid()}' in p.stderr and 'Traceback' not in p.stderr
    assert not (tmp_path/'adapter').exists() and list(run.iterdir()) == [run/'.qlora_nb.lock']
