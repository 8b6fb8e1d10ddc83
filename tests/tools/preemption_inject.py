"""Fault injection for tests/tools/test_reliability_preemption.py and test_reliability_elastic.py, imported by a
test config through ``custom_imports``: the process sends itself a real signal (``VMAMBA_TEST_SIGNAL``, e.g.
``SIGTERM``) when iteration ``VMAMBA_TEST_SIGNAL_AT`` starts (on rank ``VMAMBA_TEST_SIGNAL_RANK`` only, if set),
and, with ``VMAMBA_TEST_SECOND_SIGNAL``, that second signal in the middle of writing the checkpoint that follows
(half of its bytes written), as an impatient user or scheduler would. With ``VMAMBA_TEST_SIGNAL_GROUP``, the
signal goes to the whole process group (as Ctrl-C's does). With ``VMAMBA_TEST_SIGNAL_AT_EXIT``, that signal comes
once more while the interpreter shuts down, as torchrun's SIGTERM does when another rank has already left.
For distributed runs, :class:`RankFaultHook` kills or stalls one rank."""
import atexit
import os
import signal

from mmengine.fileio.backends.local_backend import LocalBackend
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

_put = LocalBackend.put
_sent = [False]


class _SignalAtExit:
    """Sends its signal when it is destroyed. Left as cyclic garbage by an ``atexit`` function, it is destroyed
    by the interpreter's last garbage collection, which comes after Python has put back the default action of
    the signals it handled: the moment a process is most fragile to torchrun's SIGTERM."""

    def __init__(self, name):
        self.name = name
        self.cycle = self

    def __del__(self):
        os.kill(os.getpid(), getattr(signal, self.name))


def _signal(name):
    if os.environ.get('VMAMBA_TEST_SIGNAL_GROUP'):  # as Ctrl-C does: the whole process group, workers too
        os.killpg(os.getpgid(0), getattr(signal, name))
    else:
        os.kill(os.getpid(), getattr(signal, name))


@HOOKS.register_module()
class SendSignalHook(Hook):
    priority = 'VERY_HIGH'

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == int(os.environ.get('VMAMBA_TEST_SIGNAL_AT', '0')) and not _sent[0] \
                and str(runner.rank) == os.environ.get('VMAMBA_TEST_SIGNAL_RANK', str(runner.rank)):
            _sent[0] = True
            if os.environ.get('VMAMBA_TEST_SIGNAL_AT_EXIT'):
                atexit.register(_SignalAtExit, os.environ['VMAMBA_TEST_SIGNAL_AT_EXIT'])
            _signal(os.environ['VMAMBA_TEST_SIGNAL'])


def _put_with_second_signal(self, obj, filepath):
    second = os.environ.get('VMAMBA_TEST_SECOND_SIGNAL')
    if _sent[0] and second and str(filepath).endswith('.pth.tmp'):
        with open(str(filepath), 'wb') as f:
            f.write(obj[:len(obj) // 2])
        _signal(second)
    return _put(self, obj, filepath)


LocalBackend.put = _put_with_second_signal


def _rank_at(variable):
    """(rank, iteration) of ``VARIABLE=rank:iteration``, or None."""
    value = os.environ.get(variable)
    return tuple(int(x) for x in value.split(':')) if value else None


@HOOKS.register_module()
class RankFaultHook(Hook):
    """``VMAMBA_TEST_KILL_RANK_AT=r:i``: rank r is killed (SIGKILL) as iteration i starts, in the first
    attempt of a torchrun group only; ``VMAMBA_TEST_STALL_RANK_AT=r:i``: rank r hangs there."""
    priority = 'VERY_HIGH'

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        here = (runner.rank, runner.iter + 1)
        if here == _rank_at('VMAMBA_TEST_KILL_RANK_AT') and os.environ.get('TORCHELASTIC_RESTART_COUNT') == '0':
            os.kill(os.getpid(), signal.SIGKILL)
        if here == _rank_at('VMAMBA_TEST_STALL_RANK_AT'):
            import time
            time.sleep(3600)
