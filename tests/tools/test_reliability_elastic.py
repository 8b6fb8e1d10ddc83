"""Distributed runs through tools/dist_train.sh (torchrun's c10d rendezvous), tools/train.py and
vmamba/tasks/distributed.py, two processes on CPU (gloo) training the segmentation demo (shrunk; its SyncBN trains
as BN on CPU), faults from tests/tools/preemption_inject.py:

* rank 1 killed as iteration 4 starts, one restart allowed, through dist_train.sh and through the plain
  ``torchrun --max-restarts`` form: the restarted group resumes from the newest checkpoint by itself and every
  loss equals the uninterrupted run's (each attempt meets under its own store keys: without them the restarted
  ranks mostly failed to connect, "connectFullMesh ... Connection refused", or hung);
* SIGUSR1 to rank 1 alone as iteration 3 starts: both ranks stop after iteration 3 with its checkpoint written,
  exit 75 (rank 1 also gets a SIGTERM late in its exit, its most fragile moment, as torchrun sends one when
  rank 0 has left first), and a --resume continues with the uninterrupted run's losses;
* two "nodes" on 127.0.0.1 (the same command twice, NNODES=2, one process each) train as the one-node run does;
* rank 1 hangs as iteration 3 starts: with --dist-timeout 10 the job stops within two minutes, naming the rank
  behind and its iteration.
"""
import glob
import json
import os.path as osp
import socket
import subprocess
import sys
import time

import pytest

from reliability_lib import losses, write_config
from repo_testlib import REPO, TOOLS, subprocess_env

INJECT = f'''
import sys
sys.path.insert(0, {osp.join(REPO, 'tests', 'tools')!r})
custom_imports = dict(imports=list(_base_.custom_imports.imports) + ['preemption_inject'],
                      allow_failed_imports=False)
custom_hooks = [dict(type='RankFaultHook'), dict(type='SendSignalHook')]
'''


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def dist_train(config, work, *args, restarts=0, form='dist_train.sh', **variables):
    """Two processes through tools/dist_train.sh (c10d rendezvous), or the README's plain torchrun form (its
    default static rendezvous on --master_port)."""
    port = str(free_port())
    env = subprocess_env(CUDA_VISIBLE_DEVICES='', PORT=port, PYTHON=sys.executable, MAX_RESTARTS=str(restarts),
                         **variables)
    if form == 'dist_train.sh':
        command = ['bash', osp.join(TOOLS, 'dist_train.sh'), config, '2']
    else:
        command = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={port}',
                   f'--max-restarts={restarts}', osp.join(TOOLS, 'train.py'), config, '--launcher', 'pytorch']
    start = time.time()
    proc = subprocess.run([*command, '--work-dir', str(work), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr, time.time() - start


@pytest.fixture(scope='module')
def config(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('elastic')
    return write_config(tmp, 'seg', tmp / 'data', length=6, interval=2, keep=2, extra=INJECT), tmp


def test_a_stalled_rank_stops_the_job_with_one_message(config):
    path, tmp = config
    status, log, took = dist_train(path, tmp / 'stalled', '--dist-timeout', '10', VMAMBA_TEST_STALL_RANK_AT='1:3')
    assert status != 0
    assert 'SyncBN setting(s) of the model train as BN' in log
    assert took < 120, took
    (line,) = [x for x in log.splitlines() if x.startswith('error: Distributed training timed out')]
    assert 'after 10.0 s: rank 0 waited at iteration 3 and rank 1 is behind (last started iteration 2)' in line


@pytest.fixture(scope='module')
def uninterrupted(config):
    path, tmp = config
    status, log, _ = dist_train(path, tmp / 'whole')
    assert status == 0, log[-3000:]
    whole = losses(tmp / 'whole')
    assert sorted(whole) == list(range(1, 7))
    return whole


@pytest.mark.parametrize('form', ['dist_train.sh', 'torchrun'])
def test_a_restarted_group_resumes_where_it_stopped(config, uninterrupted, form):
    path, tmp = config
    work = tmp / f'killed_{form}'
    status, log, _ = dist_train(path, work, restarts=1, form=form, VMAMBA_TEST_KILL_RANK_AT='1:4')
    assert status == 0, log[-3000:]
    assert 'exitcode: -9' in log  # rank 1 really died, and torchrun restarted the group
    assert '--resume: continuing from' in log and 'iter_2.pth' in log
    runs = sorted(glob.glob(str(work / '*' / 'vis_data' / 'scalars.json')))
    assert len(runs) == 2  # the first attempt and the restarted one, each its own log folder
    with open(runs[1]) as f:
        restarted = sorted(json.loads(line)['iter'] for line in f if '"loss"' in line)
    assert restarted == [3, 4, 5, 6]  # from the checkpoint of iteration 2, not from iteration 1
    resumed = losses(work)  # the restarted attempt's records win for iterations 3 and 4
    assert {i: r['loss'] for i, r in resumed.items()} == {i: r['loss'] for i, r in uninterrupted.items()}


def test_two_nodes_on_one_machine_train_as_one(config, uninterrupted):
    path, tmp = config
    env = subprocess_env(CUDA_VISIBLE_DEVICES='', PORT=str(free_port()), PYTHON=sys.executable, NNODES='2')
    nodes = [subprocess.Popen(['bash', osp.join(TOOLS, 'dist_train.sh'), path, '1', '--work-dir', str(tmp / 'nodes')],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    logs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    two_nodes = losses(tmp / 'nodes')
    assert {i: r['loss'] for i, r in two_nodes.items()} == {i: r['loss'] for i, r in uninterrupted.items()}


def test_each_torchrun_attempt_has_keys_of_its_own(monkeypatch):
    """What the restart test needs, without its race: a key that a rank of the dead attempt left in torchrun's
    store (gloo's address of rank 0, here) is not seen by the restarted attempt, which writes its own."""
    import datetime

    import torch.distributed as dist

    from vmamba.tasks import distributed

    shared = dist.TCPStore('127.0.0.1', 0, 1, is_master=True, timeout=datetime.timedelta(seconds=10))
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', str(shared.port))
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '1')
    monkeypatch.setenv('TORCHELASTIC_USE_AGENT_STORE', 'True')
    stores = []
    for attempt in ('0', '1'):
        monkeypatch.setenv('TORCHELASTIC_RESTART_COUNT', attempt)
        init = distributed._attempt_store('pytorch', 10)
        assert (init['rank'], init['world_size']) == (0, 1)
        stores.append(init['store'])
    stores[0].set('default_pg/0//cpu/rank_0', 'address of a dead rank')
    assert not stores[1].check(['default_pg/0//cpu/rank_0'])
    stores[1].set('default_pg/0//cpu/rank_0', 'address of the new rank')
    assert stores[0].get('default_pg/0//cpu/rank_0') == b'address of a dead rank'
    assert shared.get('vmamba/attempt_1/default_pg/0//cpu/rank_0') == b'address of the new rank'
    monkeypatch.setenv('TORCHELASTIC_USE_AGENT_STORE', 'False')  # a store of the group's own: env:// as usual
    assert distributed._attempt_store('pytorch', 10) is None


def test_a_signal_to_one_rank_stops_all_after_the_same_iteration(config, uninterrupted):
    path, tmp = config
    work = tmp / 'preempted'
    status, log, _ = dist_train(path, work, VMAMBA_TEST_SIGNAL='SIGUSR1', VMAMBA_TEST_SIGNAL_AT='3',
                                VMAMBA_TEST_SIGNAL_RANK='1', VMAMBA_TEST_SIGNAL_AT_EXIT='SIGTERM')
    assert status != 0  # torchrun's own status; its workers' are below
    assert log.count('exitcode  : 75') == 2, log[-3000:]  # both ranks, not just the one signalled
    assert 'Stopped by a signal on another rank after iteration 3: saved' in log  # rank 0, which wrote it
    assert (work / 'iter_3.pth').is_file() and not list(work.glob('*.tmp'))
    status, log, _ = dist_train(path, work, '--resume')
    assert status == 0, log[-3000:]
    assert '--resume: continuing from' in log and 'iter_3.pth' in log
    resumed = losses(work)
    assert {i: r['loss'] for i, r in resumed.items()} == {i: r['loss'] for i, r in uninterrupted.items()}
