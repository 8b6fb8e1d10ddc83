"""Crash-safe checkpoints and a checked auto-resume (tools/train.py; vmamba/engine/checkpointing.py, resume.py).

A real training subprocess (the segmentation demo, shrunk) is killed with SIGKILL in the middle of writing
its second checkpoint, with ``max_keep_ckpts=1``. What must hold: the file being written never appears under
its final name, the previous checkpoint is still there, ``last_checkpoint`` names it, and ``--resume``
continues from it to the end, with the very losses the killed run had logged. Then the auto-resume's
fall-back: an empty pointer, a pointer to a truncated file and a pointer to a missing file each lead to the
newest intact checkpoint, with one line saying what was skipped and why.
"""
import os
import os.path as osp
import shutil

import pytest
import torch

from reliability_lib import losses, write_config
from repo_testlib import REPO, run_tool

INJECT = f'''
import sys
sys.path.insert(0, {osp.join(REPO, 'tests', 'tools')!r})
custom_imports = dict(imports=list(_base_.custom_imports.imports) + ['reliability_inject'],
                      allow_failed_imports=False)
'''


@pytest.fixture(scope='module')
def killed(tmp_path_factory):
    """The killed run and its resumption (4 iterations, a checkpoint every 2, killed writing iter_4.pth)."""
    tmp = tmp_path_factory.mktemp('killed')
    config = write_config(tmp, 'seg', tmp / 'data', length=4, interval=2, keep=1, extra=INJECT)
    work = tmp / 'work'
    os.environ['VMAMBA_TEST_KILL_AT_SAVE'] = '2'
    try:
        status, log = run_tool('train', config, '--work-dir', work)
    finally:
        del os.environ['VMAMBA_TEST_KILL_AT_SAVE']
    after_kill = dict(status=status, files=sorted(os.listdir(work)),
                      pointer=(work / 'last_checkpoint').read_text(), losses=losses(work))
    status, log = run_tool('train', config, '--work-dir', work, '--resume')
    assert status == 0, log[-3000:]
    return dict(tmp=tmp, work=work, config=config, after_kill=after_kill, resume_log=log)


def test_a_kill_mid_write_leaves_the_previous_checkpoint_intact(killed):
    after = killed['after_kill']
    assert after['status'] == -9  # SIGKILL
    assert sorted(after['losses']) == [1, 2, 3, 4]  # iteration 4 was logged, then its checkpoint written
    checkpoints = [f for f in after['files'] if f.endswith('.pth')]
    assert checkpoints == ['iter_2.pth'], after['files']  # not removed before iter_4.pth was complete
    assert after['pointer'] == str(killed['work'] / 'iter_2.pth')
    assert '.iter_4.pth.tmp' in after['files']  # the half-written file kept its temporary name


def test_resume_after_the_kill_continues_exactly(killed):
    assert f'continuing from {killed["work"] / "iter_2.pth"}' in killed['resume_log']
    files = os.listdir(killed['work'])
    assert '.iter_4.pth.tmp' not in files and 'iter_2.pth' not in files and 'iter_4.pth' in files
    ckpt = torch.load(killed['work'] / 'iter_4.pth', map_location='cpu', weights_only=False)
    assert ckpt['meta']['iter'] == 4
    assert (killed['work'] / 'last_checkpoint').read_text() == str(killed['work'] / 'iter_4.pth')
    before, after = killed['after_kill']['losses'], losses(killed['work'])
    for it in (3, 4):  # the resumed run's iterations, against those the killed run logged
        for key in ('loss', 'decode.loss_ce', 'aux.loss_ce'):
            assert after[it][key] == before[it][key], (it, key)


@pytest.fixture
def two_checkpoints(killed, tmp_path):
    """A work dir with a good older and a good newer checkpoint (the resumed run's iter_4, the kill's iter_2
    is gone: rebuild it from iter_4 with the iteration set back)."""
    work = tmp_path / 'work'
    work.mkdir()
    shutil.copy(killed['work'] / 'iter_4.pth', work / 'iter_4.pth')
    old = torch.load(work / 'iter_4.pth', map_location='cpu', weights_only=False)
    old['meta']['iter'] = 2
    torch.save(old, work / 'iter_2.pth')
    os.utime(work / 'iter_2.pth', (1, 1))  # older
    return work


def _resolve(work, capsys):
    from vmamba.engine.resume import find_resumable
    path, ckpt = find_resumable(str(work))
    return path, ckpt, capsys.readouterr().err


def test_auto_resume_skips_a_truncated_file(two_checkpoints, capsys):
    work = two_checkpoints
    data = (work / 'iter_4.pth').read_bytes()
    (work / 'iter_4.pth').write_bytes(data[:len(data) // 3])
    (work / 'last_checkpoint').write_text(str(work / 'iter_4.pth'))
    path, ckpt, err = _resolve(work, capsys)
    assert path == str(work / 'iter_2.pth') and ckpt['meta']['iter'] == 2
    (line,) = [x for x in err.splitlines() if 'skipped' in x]
    assert str(work / 'iter_4.pth') in line and 'truncated' in line


def test_auto_resume_with_an_empty_or_dangling_pointer(two_checkpoints, capsys):
    work = two_checkpoints
    (work / 'last_checkpoint').write_text('')
    path, _, err = _resolve(work, capsys)
    assert path == str(work / 'iter_4.pth')  # the newest file of the work dir
    assert 'last_checkpoint is empty' in err
    (work / 'last_checkpoint').write_text(str(work / 'iter_9.pth'))
    path, _, err = _resolve(work, capsys)
    assert path == str(work / 'iter_4.pth')
    (line,) = [x for x in err.splitlines() if 'skipped' in x]
    assert 'iter_9.pth' in line and 'does not exist' in line


def test_resume_from_files_that_are_not_checkpoints(two_checkpoints, tmp_path):
    from repo_testlib import tool
    train = tool('train')
    work = two_checkpoints
    for name in ('iter_2.pth', 'iter_4.pth'):
        (work / name).write_bytes(os.urandom(4096) if name == 'iter_4.pth' else b'hello, not a checkpoint\n')
    config = write_config(tmp_path, 'cls', tmp_path / 'data')
    with pytest.raises(SystemExit) as info:
        train.main([config, '--work-dir', str(work), '--resume'])
    message = info.value.code
    assert message.startswith('error: --resume: no intact checkpoint') and '\n' not in message
    assert 'iter_4.pth (it is not a PyTorch checkpoint' in message and 'iter_2.pth (it is not' in message
    with pytest.raises(SystemExit) as info:
        train.main([config, '--work-dir', str(work), '--resume', str(work / 'iter_2.pth')])
    assert 'cannot resume from it: it is not a PyTorch checkpoint (it starts with text' in info.value.code
