"A second run on a result_path in use is refused before anything is loaded."
import os, socket, subprocess
from conftest import run

def test_second_run_on_same_result_path_is_refused(tmp_path):
    rp = tmp_path/'run'; rp.mkdir()
    (rp/'.qlora_nb.lock').write_text(f'{os.getpid()} {socket.gethostname()}\n')   # held by a live process: this one
    p = run('train', '--set', f'result_path={rp}', '--set', f'save_path={tmp_path}/adapter', timeout=120, rc=2)
    assert f'another run (PID {os.getpid()}' in p.stderr and 'Traceback' not in p.stderr
    assert not (tmp_path/'adapter').exists() and list(rp.iterdir()) == [rp/'.qlora_nb.lock']


# Races: the lock is created whole (PID written to a temporary file, hard-linked into place) and a stale one is taken
# over under an exclusive flock, so however many starts race on one result_path, exactly one gets it.
import multiprocessing, time
import pytest
from conftest import FAULT, finish, first_chats, sets, spawn

def _contend(path, start, barrier, q):
    from qlora_nb.config import ConfigError
    from qlora_nb.train import RunLock
    while time.time() < start: pass
    try: lock = RunLock(path).__enter__()
    except ConfigError as e: q.put(('refused', str(e))); barrier.wait(); return
    q.put(('won', '')); barrier.wait()   # hold the lock until every contender has tried
    lock.__exit__(None, None, None)

@pytest.mark.parametrize('stale', [False, True], ids=['no lock', 'stale lock'])
def test_racing_starts_exactly_one_takes_the_lock(tmp_path, stale):
    from qlora_nb.train import LOCK_NAME
    ctx, n = multiprocessing.get_context('fork'), 6
    dead = subprocess.Popen(['true']); dead.wait()
    for r in range(4):
        d = tmp_path/f'round{r}'; d.mkdir()
        if stale: (d/LOCK_NAME).write_text(f'{dead.pid} {socket.gethostname()}\n')
        q, barrier, start = ctx.Queue(), ctx.Barrier(n), time.time() + 0.5
        ps = [ctx.Process(target=_contend, args=(d, start, barrier, q)) for _ in range(n)]
        for p in ps: p.start()
        got = [q.get(timeout=60) for _ in ps]
        for p in ps: p.join(timeout=60)
        assert [g for g, _ in got].count('won') == 1, got
        assert all('another run (PID' in m for g, m in got if g == 'refused'), got
        assert list(d.iterdir()) == []          # released, and no temporary file left behind

def test_an_empty_lock_is_not_taken_for_stale(tmp_path):
    from qlora_nb.config import ConfigError
    from qlora_nb.train import LOCK_NAME, RunLock
    (tmp_path/LOCK_NAME).write_text('')        # as a lock file looks while another run is writing it (with older writers)
    with pytest.raises(ConfigError, match='names no run'): RunLock(tmp_path).__enter__()
    assert (tmp_path/LOCK_NAME).read_text() == ''

def test_two_runs_started_together_exactly_one_trains(tmp_path):
    data = first_chats(tmp_path/'chats.jsonl', 8)
    args = lambda i: ['none', 0, 'train', *sets(f'training_data_json_path={data}', f'result_path={tmp_path}/run',
                      f'save_path={tmp_path}/adapter{i}', 'training.max_steps=2', 'data.max_length=64', 'training.disable_tqdm=true')]
    # SLOW_PREPARE: the winner holds the lock a while: the other is sure to find it taken
    ps = [finish(p) for p in [spawn(*args(i), script=FAULT, env={'SLOW_PREPARE': 3}) for i in (0, 1)]]
    outs = [p.stdout for p in ps]
    rcs = sorted(p.returncode for p in ps)
    assert rcs == [0, 2], outs
    loser = outs[[p.returncode for p in ps].index(2)]
    assert 'another run (PID' in loser and 'Traceback' not in loser, loser
    assert sum((tmp_path/f'adapter{i}').exists() for i in (0, 1)) == 1
