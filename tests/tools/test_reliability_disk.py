"""A full disk and a failing checkpoint write (vmamba/engine/disk_space.py with the safe checkpoint hook).

* a real write fault: tools/train.py in a subprocess under a file size limit smaller than a checkpoint
  (``RLIMIT_FSIZE`` with SIGXFSZ ignored, so the write fails with EFBIG): one ``error:`` line naming the
  file and the cause, status 1, no traceback, no ``.tmp`` left;
* ENOSPC on the second checkpoint (the write raises it half-way, in-process): the message names the newest
  intact checkpoint, which is still there and still the pointer's;
* too little free space before a save: ``on_low_disk='warn'`` skips the checkpoint and trains on,
  ``'stop'`` ends the run with the newest intact checkpoint named.
The classification demo shrunk to a tiny VMamba (a checkpoint of about 1.5 MB), iteration loop.
"""
import errno
import os.path as osp
import resource
import signal
import subprocess
import sys

import pytest

from reliability_lib import losses, write_config
from repo_testlib import REPO, TOOLS, subprocess_env

from vmamba.engine import disk_space


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (500_000, 500_000))


def _main(train, config, work, *options):
    name = 'disk_' + osp.basename(str(work))
    train.main([config, '--work-dir', str(work), '--cfg-options', f'experiment_name={name}',
                f'visualizer.name={name}', *options])


def test_a_write_over_the_file_size_limit_ends_in_one_line(tmp_path):
    config = write_config(tmp_path, 'cls_iter', tmp_path / 'data', length=2, interval=2)
    work = tmp_path / 'work'
    proc = subprocess.run([sys.executable, osp.join(TOOLS, 'train.py'), config, '--work-dir', str(work)],
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300,
                          preexec_fn=_limit_file_size)
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (f'error: Could not write {work}/iter_2.pth: file too large (a file size limit) '
                    f'([Errno 27] on {work}/.iter_2.pth.tmp); the half-written file was removed. '
                    'No intact checkpoint was written before this point.')
    assert 'Traceback' not in proc.stderr
    assert not list(work.glob('.*.tmp')) and not list(work.glob('*.pth'))


def test_no_space_on_the_second_checkpoint_names_the_first(train, tmp_path, monkeypatch):
    from mmengine.fileio.backends.local_backend import LocalBackend
    put = LocalBackend.put

    def full_disk(self, obj, filepath):
        if 'iter_4' in str(filepath):
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
            raise OSError(errno.ENOSPC, 'No space left on device', str(filepath))
        return put(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, 'put', full_disk)
    config = write_config(tmp_path, 'cls_iter', tmp_path / 'data', length=4, interval=2)
    work = tmp_path / 'enospc'
    with pytest.raises(SystemExit) as stop:
        _main(train, config, work)
    first = work / 'iter_2.pth'
    assert str(stop.value.code) == (
        f'error: Could not write {work}/iter_4.pth: no space left on the device ([Errno 28] on '
        f'{work}/.iter_4.pth.tmp); the half-written file was removed. The newest intact checkpoint is {first} '
        f'(resume with --resume {first}).')
    assert sorted(p.name for p in work.glob('*.pth')) == ['iter_2.pth']
    assert not list(work.glob('.*.tmp'))
    assert (work / 'last_checkpoint').read_text() == str(first)


@pytest.mark.parametrize('action', ['warn', 'stop'])
def test_low_disk_skips_or_stops(train, tmp_path, monkeypatch, capsys, action):
    real = disk_space.shutil.disk_usage
    calls = []

    def usage(folder):  # room for the first checkpoint, none left after it
        calls.append(folder)
        return real(folder)._replace(free=0) if len(calls) > 1 else real(folder)

    monkeypatch.setattr(disk_space.shutil, 'disk_usage', usage)
    config = write_config(tmp_path, 'cls_iter', tmp_path / 'data', length=6, interval=2,
                          keep=3, extra=f"\ndefault_hooks['checkpoint']['on_low_disk'] = {action!r}\n")
    work = tmp_path / action
    first = work / 'iter_2.pth'
    if action == 'stop':
        with pytest.raises(SystemExit) as stop:
            _main(train, config, work)
        message = str(stop.value.code)
        assert message.startswith(f'error: Only 0 MiB free in {work}, and the checkpoint {work}/iter_4.pth needs '
                                   'about 18 MiB; training stopped')
        assert f'The newest intact checkpoint is {first}' in message
        assert sorted(losses(work)) == [1, 2, 3, 4]
    else:
        _main(train, config, work)
        err = capsys.readouterr()
        assert 'iter_4.pth needs about 18 MiB; it is skipped and training goes on' in err.out + err.err
        assert sorted(losses(work)) == [1, 2, 3, 4, 5, 6]  # trained to the end
    assert sorted(p.name for p in work.glob('*.pth')) == ['iter_2.pth']
    assert (work / 'last_checkpoint').read_text() == str(first)
