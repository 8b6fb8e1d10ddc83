"""One training run per work dir: an ``flock`` on ``WORK_DIR/.lock``, taken before anything is written there.

Two runs in one work dir overwrite each other's checkpoints, ``last_checkpoint`` and config dump, and the
second one's start-up removes the first one's half-written checkpoint. :func:`lock_work_dir` takes an
exclusive, non-blocking ``flock`` on the lock file (rank 0 alone, the others learn the outcome from it) and
writes the holder into it (host, pid, start time, command). A second run stops at once with
:class:`WorkDirBusy` naming the holder. The kernel drops an ``flock`` when its process dies, however it
dies, so a lock file whose lock is free but which still names a holder is the trace of a run that was
killed: it is taken over, with a line saying so. The lock is held until the process exits.

Limits: ``flock`` is local to one machine, or works across machines on file systems that support it
(NFSv4, Lustre with ``-o flock``, GPFS); where it does not, two hosts are not kept apart.
"""
import datetime
import fcntl
import os
import os.path as osp
import socket
import sys

from vmamba.errors import ToolError

__all__ = ['LOCK_NAME', 'WorkDirBusy', 'lock_work_dir', 'holder_of']

LOCK_NAME = '.lock'
_held = {}  # work dir -> open file object: the lock lives as long as the file stays open


class WorkDirBusy(ToolError):
    """Another run trains in this work dir."""


def holder_of(path):
    """What the lock file at ``path`` says about its holder, as one phrase ('' if nothing)."""
    try:
        with open(path) as f:
            fields = dict(line.split('=', 1) for line in f.read().splitlines() if '=' in line)
    except OSError:
        return ''
    if not fields:
        return ''
    return (f'pid {fields.get("pid", "?")} on {fields.get("host", "?")}, started {fields.get("started", "?")}'
            f' ({fields.get("command", "?")})')


def _try_lock(work_dir, log):
    os.makedirs(work_dir, exist_ok=True)
    path = osp.join(work_dir, LOCK_NAME)
    handle = open(path, 'a+')
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        who = holder_of(path) or 'another process'
        return (f'{work_dir} is in use by another training run ({who}). Wait for it to finish or stop it, or '
                f'train in another --work-dir.')
    stale = holder_of(path)
    if stale:
        log(f'note: taking over the lock of {work_dir}: its last holder ({stale}) is no longer running.')
    handle.seek(0)
    handle.truncate()
    started = datetime.datetime.now().isoformat(timespec='seconds')
    handle.write(f'host={socket.gethostname()}\npid={os.getpid()}\nstarted={started}\n'
                 f'command={" ".join(sys.argv)}\n')
    handle.flush()
    _held[osp.abspath(work_dir)] = handle
    return None


def lock_work_dir(work_dir, log=None):
    """Take the work dir's lock on rank 0, or raise :class:`WorkDirBusy` (on every rank)."""
    from mmengine.dist import broadcast_object_list, get_rank, get_world_size
    log = log or (lambda line: print(line, file=sys.stderr))
    if osp.abspath(work_dir) in _held:  # this process holds it already (a second run in one process)
        return
    problem = [_try_lock(work_dir, log) if get_rank() == 0 else None]
    if get_world_size() > 1:
        broadcast_object_list(problem, src=0)
    if problem[0]:
        raise WorkDirBusy(problem[0])


def release(work_dir):
    """Release this process's lock of ``work_dir`` (empties the file first: a clean end leaves no holder)."""
    handle = _held.pop(osp.abspath(work_dir), None)
    if handle is None:
        return
    handle.seek(0)
    handle.truncate()
    handle.flush()
    handle.close()
