"""Fault injection for tests/tools/test_reliability_checkpoints.py, imported by a test config through
``custom_imports``: the N-th checkpoint write (``VMAMBA_TEST_KILL_AT_SAVE=N``) writes half of its bytes,
then the process kills itself with SIGKILL, as ``kill -9`` (or the OOM killer) would mid-write."""
import os
import signal

from mmengine.fileio.backends.local_backend import LocalBackend

_put = LocalBackend.put
_count = [0]


def _dying_put(self, obj, filepath):
    name = str(filepath)
    if name.endswith(('.pth', '.pth.tmp')):
        _count[0] += 1
        if _count[0] == int(os.environ.get('VMAMBA_TEST_KILL_AT_SAVE', '0')):
            with open(name, 'wb') as f:
                f.write(obj[:len(obj) // 2])
                f.flush()
                os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
    return _put(self, obj, filepath)


LocalBackend.put = _dying_put
