"""A full disk or a failing write, met before or while a checkpoint is written, as one line.

The safe write order (:mod:`.checkpointing`) writes the new checkpoint before it removes the old one, so the
volume needs room for one more checkpoint. :func:`room_for_checkpoint` estimates its size (the newest
checkpoint's size, else the bytes of the model's and the optimizer's tensors) and compares it with the free
space; the checkpoint hook then warns and skips that checkpoint (``on_low_disk='warn'``, the default: the
run keeps training and checks again at the next one) or stops (``'stop'``). A write that fails anyway
(no space, quota, I/O error, file size limit) is turned by :func:`write_errors` into a
:class:`CheckpointWriteError` naming the file, the cause and the newest intact checkpoint, after the
half-written temporary file is removed, instead of mmengine's traceback.
"""
import contextlib
import errno
import os
import os.path as osp
import shutil

import torch

from vmamba.errors import ToolError

__all__ = ['LOW_DISK_ACTIONS', 'DISK_ERRNOS', 'CheckpointWriteError', 'newest_checkpoint', 'estimated_size',
           'room_for_checkpoint', 'write_errors']

LOW_DISK_ACTIONS = ('warn', 'stop')
#: The write errors that are the disk's, not the program's.
DISK_ERRNOS = {errno.ENOSPC: 'no space left on the device', errno.EDQUOT: 'disk quota exceeded',
               errno.EIO: 'input/output error', errno.EFBIG: 'file too large (a file size limit)'}
#: Headroom on top of the estimate (pickle framing, the pointer file, logs written meanwhile).
MARGIN = 16 << 20


class CheckpointWriteError(ToolError):
    """A checkpoint could not be written, or not safely (no room for it)."""


def newest_checkpoint(work_dir):
    """The checkpoint ``last_checkpoint`` names if it is on disk, else None."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    try:
        with open(pointer) as f:
            path = f.read().strip()
    except OSError:
        return None
    return path if path and osp.isfile(path) else None


def _newest_sentence(work_dir):
    path = newest_checkpoint(work_dir)
    if path:
        return f'The newest intact checkpoint is {path} (resume with --resume {path}).'
    return 'No intact checkpoint was written before this point.'


def _tensor_bytes(node):
    if isinstance(node, torch.Tensor):
        return node.numel() * node.element_size()
    if isinstance(node, dict):
        return sum(_tensor_bytes(v) for v in node.values())
    if isinstance(node, (list, tuple)):
        return sum(_tensor_bytes(v) for v in node)
    return 0


def estimated_size(runner):
    """Bytes the next checkpoint will take: the newest checkpoint's size, else its tensors' bytes."""
    newest = newest_checkpoint(runner.work_dir)
    if newest:
        return osp.getsize(newest)
    size = _tensor_bytes(runner.model.state_dict())
    wrapper = getattr(runner, 'optim_wrapper', None)
    if wrapper is not None and hasattr(wrapper, 'state_dict'):
        size += _tensor_bytes(wrapper.state_dict())
    return size


def room_for_checkpoint(runner, folder, path, action, log):
    """True if ``folder`` has room for the checkpoint ``path``; else log (``warn``: False) or stop."""
    needed = estimated_size(runner) + MARGIN
    free = shutil.disk_usage(folder).free
    if free >= needed:
        return True
    what = (f'Only {free / 2**20:.0f} MiB free in {folder}, and the checkpoint {path} needs about '
            f'{needed / 2**20:.0f} MiB')
    if action == 'stop':
        raise CheckpointWriteError(f'{what}; training stopped (on_low_disk=\'stop\'). '
                                   f'{_newest_sentence(runner.work_dir)} Free some space and resume.')
    log(f'{what}; it is skipped and training goes on (on_low_disk=\'warn\'; \'stop\' ends the run instead). '
        f'{_newest_sentence(runner.work_dir)}')
    return False


@contextlib.contextmanager
def write_errors(path, tmp, work_dir):
    """Turn a disk's write error while ``path`` is written (through ``tmp``) into a CheckpointWriteError."""
    try:
        yield
    except OSError as err:
        if err.errno not in DISK_ERRNOS:
            raise
        if tmp and osp.exists(tmp):
            with contextlib.suppress(OSError):
                os.remove(tmp)
        raise CheckpointWriteError(
            f'Could not write {path}: {DISK_ERRNOS[err.errno]} ([Errno {err.errno}] on '
            f'{err.filename or tmp or path}); the half-written file was removed. {_newest_sentence(work_dir)}'
        ) from err
