"""A signal stops training with a checkpoint of the exact point reached and exit status 75, and the resumed
run continues with the uninterrupted run's losses, bit for bit (vmamba/engine/preemption.py, the epoch loop of
vmamba/engine/exact_resume.py).

Real training subprocesses (the demo configs, shrunk) send themselves a real signal as an iteration starts
(tests/tools/preemption_inject.py): SIGUSR1 (what slurm_train.sh asks Slurm for before the time limit) to an
iteration-based run, followed by a SIGTERM in the middle of writing the checkpoint and one more while the
process exits (what torchrun sends when another rank has left first); a Ctrl-C (SIGINT to the
whole process group, DataLoader workers included) to an epoch-based run in the middle of an epoch.
"""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from reliability_lib import losses, write_config
from repo_testlib import REPO, TOOLS, subprocess_env

INJECT = f'''
import sys
sys.path.insert(0, {osp.join(REPO, 'tests', 'tools')!r})
custom_imports = dict(imports=list(_base_.custom_imports.imports) + ['preemption_inject'],
                      allow_failed_imports=False)
custom_hooks = [dict(type='SendSignalHook')]
'''


def train(config, work, *args, **variables):
    """tools/train.py in its own session (a signal to its process group reaches no one else): status, output."""
    proc = subprocess.run([sys.executable, osp.join(TOOLS, 'train.py'), config, '--work-dir', str(work), *args],
                          cwd=REPO, env=subprocess_env(**variables), capture_output=True, text=True, timeout=600,
                          start_new_session=True)
    return proc.returncode, proc.stdout + proc.stderr


def terms(record):
    return {k: v for k, v in record.items() if k.startswith('loss') or '.loss' in k or k == 'lr'}


def stop_line(log):
    (line,) = [x for x in log.splitlines() if 'Stopped by' in x]
    return line


def run_interrupted_and_resumed(tmp, task, workers, length, interval, at, **signals):
    config = write_config(tmp, task, tmp / 'data', workers=workers, length=length, interval=interval, keep=3,
                          extra=INJECT)
    status, log = train(config, tmp / 'full')
    assert status == 0, log[-3000:]
    stopped = tmp / 'stopped'
    status, log = train(config, stopped, VMAMBA_TEST_SIGNAL_AT=str(at), **signals)
    after_stop = dict(status=status, log=log, files=sorted(os.listdir(stopped)), losses=losses(stopped),
                      pointer=(stopped / 'last_checkpoint').read_text())
    ckpt = torch.load(after_stop['pointer'], map_location='cpu', weights_only=False)
    after_stop.update(meta=ckpt['meta'], has_optimizer='optimizer' in ckpt)
    status, resume_log = train(config, stopped, '--resume')
    assert status == 0, resume_log[-3000:]
    return losses(tmp / 'full'), after_stop, losses(stopped), resume_log


@pytest.fixture(scope='module')
def iteration_based(tmp_path_factory):
    """Segmentation, 6 iterations, checkpoints every 4: SIGUSR1 as iteration 3 starts, SIGTERM mid-save and
    again during the exit."""
    return run_interrupted_and_resumed(tmp_path_factory.mktemp('iter'), 'seg', 0, 6, 4, 3,
                                       VMAMBA_TEST_SIGNAL='SIGUSR1', VMAMBA_TEST_SECOND_SIGNAL='SIGTERM',
                                       VMAMBA_TEST_SIGNAL_AT_EXIT='SIGTERM')


@pytest.fixture(scope='module')
def epoch_based(tmp_path_factory):
    """Classification, 2 epochs of 3 iterations, 2 workers: Ctrl-C to the process group at iteration 2."""
    return run_interrupted_and_resumed(tmp_path_factory.mktemp('epoch'), 'cls', 2, 2, 1, 2,
                                       VMAMBA_TEST_SIGNAL='SIGINT', VMAMBA_TEST_SIGNAL_GROUP='1')


def test_a_signal_saves_the_iteration_it_interrupts(iteration_based):
    _, stop, _, _ = iteration_based
    assert stop['status'] == 75, stop['log'][-3000:]  # not -15: the SIGTERM during the exit is ignored
    assert 'Traceback' not in stop['log']
    work = stop['pointer'].rsplit('/', 1)[0]
    line = stop_line(stop['log'])
    assert f'Stopped by SIGUSR1 after iteration 3: saved {work}/iter_3.pth' in line
    assert f'--work-dir {work} --resume' in line and 'exit status 75' in line
    assert sorted(stop['losses']) == [1, 2, 3]
    # the second signal, mid-write, changed nothing: the file is complete and published, no .tmp is left
    assert stop['pointer'] == f'{work}/iter_3.pth'
    assert [f for f in stop['files'] if f.endswith(('.pth', '.tmp'))] == ['iter_3.pth']
    assert stop['meta']['iter'] == 3 and stop['has_optimizer']


def test_resumed_iteration_based_run_is_bit_identical(iteration_based):
    full, _, resumed, log = iteration_based
    assert 'continuing from' in log and 'iter_3.pth' in log
    assert sorted(resumed) == list(range(1, 7))
    for it in range(1, 7):
        assert terms(resumed[it]) == terms(full[it]), it


def test_ctrl_c_in_the_middle_of_an_epoch(epoch_based):
    _, stop, _, _ = epoch_based
    assert stop['status'] == 75, stop['log'][-3000:]
    assert 'KeyboardInterrupt' not in stop['log'] and 'DataLoader worker' not in stop['log']
    assert 'Stopped by SIGINT after iteration 2: saved ' in stop_line(stop['log'])
    assert stop['pointer'].endswith('/preempted_iter_2.pth')
    assert [f for f in stop['files'] if f.endswith(('.pth', '.tmp'))] == ['preempted_iter_2.pth']
    assert (stop['meta']['epoch'], stop['meta']['iter']) == (0, 2)  # in epoch 1 (0-based 0), two of its three batches done


def test_resumed_epoch_based_run_continues_mid_epoch_bit_identical(epoch_based):
    full, _, resumed, log = epoch_based
    assert 'Resuming epoch 1 at batch 3' in log
    assert sorted(resumed) == sorted(full) == list(range(1, 7))
    for it in range(1, 7):
        assert terms(resumed[it]) == terms(full[it]), it
    work = osp.dirname(log.split('continuing from ')[1].split(' ')[0])
    files = os.listdir(work)
    assert 'preempted_iter_2.pth' not in files and 'epoch_2.pth' in files  # superseded, then removed
