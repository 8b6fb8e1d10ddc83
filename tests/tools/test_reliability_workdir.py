"""One run per work dir (vmamba/engine/workdir_lock.py): a second tools/train.py in a work dir that a live
process holds stops at once with one line naming the holder; the lock of a process that died is taken over
with a note; the temporary files a killed run left are removed once the lock is held."""
import os
import subprocess
import sys
import time

import pytest

from reliability_lib import write_config
from repo_testlib import subprocess_env

HOLD = '''
import sys, time
from vmamba.engine.workdir_lock import lock_work_dir
lock_work_dir(sys.argv[1])
print('locked', flush=True)
time.sleep(120)
'''


@pytest.fixture
def holder(tmp_path):
    """A live process holding tmp_path/work's lock."""
    work = tmp_path / 'work'
    proc = subprocess.Popen([sys.executable, '-c', HOLD, str(work)], env=subprocess_env(), stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == 'locked'
    yield work, proc
    proc.kill()
    proc.wait()


def test_a_second_run_in_a_busy_work_dir_stops_at_once(train, holder, tmp_path):
    work, proc = holder
    (work / '.iter_4.pth.tmp').write_bytes(b'half')  # the holder's file being written: must survive
    config = write_config(tmp_path, 'cls', tmp_path / 'data')
    start = time.time()
    with pytest.raises(SystemExit) as info:
        train.main([config, '--work-dir', str(work)])
    message = info.value.code
    assert time.time() - start < 30
    assert message.startswith(f'error: {work} is in use by another training run (pid {proc.pid} on ')
    assert '\n' not in message and 'another --work-dir' in message
    assert sorted(os.listdir(work)) == ['.iter_4.pth.tmp', '.lock']  # nothing written, nothing removed


def test_the_lock_of_a_dead_run_is_taken_over(tmp_path, capsys):
    from vmamba.engine import workdir_lock
    from vmamba.engine.checkpointing import remove_leftovers
    work = tmp_path / 'work'
    dead = subprocess.run([sys.executable, '-c', HOLD.replace('time.sleep(120)', 'import os; os._exit(0)'),
                           str(work)], env=subprocess_env(), capture_output=True, text=True)
    assert dead.stdout.strip() == 'locked'
    (work / '.iter_2.pth.tmp').write_bytes(b'half')
    workdir_lock.lock_work_dir(str(work))
    try:
        remove_leftovers(str(work))
        err = capsys.readouterr().err
        assert 'its last holder (pid ' in err and 'is no longer running' in err
        assert f'Removing {work / ".iter_2.pth.tmp"}' in err and not (work / '.iter_2.pth.tmp').exists()
        assert f'pid={os.getpid()}' in (work / '.lock').read_text()
    finally:
        workdir_lock.release(str(work))
    assert (work / '.lock').read_text() == ''  # a clean end leaves no holder


def test_each_run_keeps_its_own_config(train, tmp_path):
    """Two runs one after the other in one work dir (the second not resuming): each run's log folder holds the
    config it ran with, whatever the next run dumps to the top of the work dir."""
    config = write_config(tmp_path, 'cls', tmp_path / 'data', length=1)
    work = tmp_path / 'work'
    for lr in ('0.0123', '0.0456'):
        train.main([config, '--work-dir', str(work), '--cfg-options', f'optim_wrapper.optimizer.lr={lr}',
                    f'experiment_name=run_{lr}', f'visualizer.name=run_{lr}'])
    runs = sorted(p for p in work.iterdir() if p.is_dir() and (p / 'vis_data').is_dir())
    assert len(runs) == 2, list(work.iterdir())
    dumped = [(run / os.path.basename(config)).read_text() for run in runs]
    assert 'lr=0.0123' in dumped[0] and 'lr=0.0456' not in dumped[0]
    assert 'lr=0.0456' in dumped[1] and 'lr=0.0123' not in dumped[1]
