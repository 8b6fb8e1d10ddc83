"""Distributed runs through tools/dist_train.sh (torchrun's c10d rendezvous), tools/train.py and
vmamba/tasks/distributed.py, two processes on CPU (gloo) training the segmentation demo (shrunk; its SyncBN trains
as BN on CPU), faults from tests/tools/preemption_inject.py:

* two "nodes" on 127.0.0.1 (the same command twice, NNODES=2, one process each) train as the one-node run does;
* rank 1 hangs as iteration 3 starts: with --dist-timeout 10 the job stops within two minutes, naming the rank
  behind and its iteration.
"""
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
custom_hooks = [dict(type='RankFaultHook')]
'''


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def dist_train(config, work, *args, restarts=0, **variables):
    env = subprocess_env(CUDA_VISIBLE_DEVICES='', PORT=str(free_port()), PYTHON=sys.executable,
                         MAX_RESTARTS=str(restarts), **variables)
    start = time.time()
    proc = subprocess.run(['bash', osp.join(TOOLS, 'dist_train.sh'), config, '2', '--work-dir', str(work), *args],
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
