"""Checkpoints that survive a crash: atomic writes, old files removed only after the new one is in place.

mmengine's ``CheckpointHook`` removes the oldest checkpoint (``max_keep_ckpts``) *before* it writes the new
one, writes under the final name, and rewrites ``last_checkpoint`` in place. A crash (``kill -9``, out of
memory, a full disk) while a file is written then leaves a truncated file under its final name, the older
file already gone and a pointer to something that cannot be loaded. :class:`SafeCheckpointHook` keeps
every option of the mmengine hook and changes only the order and the way files are written:

1. the checkpoint is written to a temporary name in the same folder (``.iter_20.pth.tmp``), flushed and
   ``fsync``-ed, then renamed to its final name (a rename within a folder is atomic on POSIX), and the folder
   itself is ``fsync``-ed;
2. ``last_checkpoint`` is replaced the same way;
3. only then are checkpoints beyond ``max_keep_ckpts`` (and a superseded ``best_*`` checkpoint) removed.

So at any moment every ``*.pth`` under its final name is complete, and ``last_checkpoint`` names one of
them. Before writing, the weights are checked: a model with non-finite weights is never saved
(:class:`~vmamba.engine.nan_guard.NonFiniteError`). Leftover temporary files of a killed run are removed when
the next run starts. Remote back-ends (``s3://`` ...) keep mmengine's behaviour.
"""
import glob
import os
import os.path as osp
import sys

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from .disk_space import LOW_DISK_ACTIONS, room_for_checkpoint, write_errors

__all__ = ['TMP_SUFFIX', 'atomic_write', 'remove_leftovers', 'SafeCheckpointHook', 'use_safe_checkpoints']

#: Suffix of a checkpoint (or pointer) that is still being written; such files are never loaded.
TMP_SUFFIX = '.tmp'


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_name(path):
    folder, name = osp.split(path)
    return osp.join(folder, f'.{name}{TMP_SUFFIX}')


def _publish(tmp, path):
    """fsync ``tmp``, rename it to ``path`` and fsync the folder."""
    with open(tmp, 'rb+') as f:
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(osp.dirname(osp.abspath(path)))


def atomic_write(path, data):
    """Write ``data`` (bytes or str) to ``path`` so that ``path`` holds either the old or the whole new content."""
    tmp = _temp_name(path)
    with open(tmp, 'wb') as f:
        f.write(data.encode() if isinstance(data, str) else data)
    _publish(tmp, path)


def atomic_torch_save(obj, path):
    """``torch.save`` through a temporary file in the same folder (see :func:`atomic_write`)."""
    tmp = _temp_name(path)
    torch.save(obj, tmp)
    _publish(tmp, path)


def remove_leftovers(folder, log=None):
    """Remove the temporary files a killed run left in ``folder`` (call it holding the work dir's lock, before
    anything else is written: on a full disk they are what frees the room to start)."""
    if not is_main_process() or '://' in str(folder) or not osp.isdir(folder):
        return
    log = log or (lambda line: print(line, file=sys.stderr))
    for leftover in sorted(glob.glob(osp.join(folder, f'.*{TMP_SUFFIX}'))):
        log(f'Removing {leftover}, a file a previous run did not finish writing.')
        os.remove(leftover)


def non_finite_tensors(state_dict):
    """Names of the floating-point tensors of ``state_dict`` that hold a NaN or an infinity."""
    return [k for k, v in state_dict.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` with crash-safe writes (see the module docstring); same arguments.

    Registered in mmengine's root registry, so it builds under the mmdet, mmseg and mmpretrain scopes;
    ``tools/train.py`` puts it in place of ``CheckpointHook`` (:func:`use_safe_checkpoints`). One more
    argument, ``on_low_disk``: ``'warn'`` (skip a checkpoint the volume has no room for and keep training)
    or ``'stop'`` (see :mod:`.disk_space`).
    """

    def __init__(self, *args, on_low_disk='warn', **kwargs):
        if on_low_disk not in LOW_DISK_ACTIONS:
            from vmamba.errors import ToolError
            raise ToolError(f'default_hooks.checkpoint.on_low_disk={on_low_disk!r}: use one of '
                            f'{", ".join(map(repr, LOW_DISK_ACTIONS))}.')
        super().__init__(*args, **kwargs)
        self.on_low_disk = on_low_disk

    def before_train(self, runner):
        super().before_train(runner)
        self._local = '://' not in str(self.out_dir)
        remove_leftovers(self.out_dir, log=runner.logger.warning)  # out_dir may lie outside the work dir

    # -- writing
    def _check_finite(self, runner, name):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        bad = non_finite_tensors(model.state_dict())
        if bad:
            from .nan_guard import NonFiniteError, last_good_checkpoint
            raise NonFiniteError(
                f'Training stopped at iteration {runner.iter + 1}: {len(bad)} weight tensors are non-finite '
                f'(e.g. {", ".join(bad[:3])}), so {name} was not written. '
                f'{last_good_checkpoint(runner)} Lower the learning rate (or enable gradient clipping).')

    def _write(self, runner, filename, **kwargs):
        """``runner.save_checkpoint`` to a temporary name, then publish it as ``filename``."""
        self._check_finite(runner, filename)
        if not self._local:
            type(runner).save_checkpoint(runner, self.out_dir, filename, **kwargs)
            return
        tmp = osp.basename(_temp_name(filename))
        path, tmp_path = osp.join(self.out_dir, filename), osp.join(self.out_dir, tmp)
        with write_errors(path, tmp_path, runner.work_dir):
            type(runner).save_checkpoint(runner, self.out_dir, tmp, **kwargs)
            if is_main_process():
                _publish(tmp_path, path)

    def _remove(self, path):
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):  # deepspeed checkpoints are folders
            self.file_backend.rmtree(path)

    def _save_checkpoint_with_step(self, runner, step, meta):
        if self._local and is_main_process() and not room_for_checkpoint(
                runner, self.out_dir, self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(step)),
                self.on_low_disk, runner.logger.warning):
            return
        outdated = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            ids = list(self.keep_ckpt_ids) + [step]
            outdated, ids = ids[:-self.max_keep_ckpts], ids[-self.max_keep_ckpts:]
            self.keep_ckpt_ids.clear()
            self.keep_ckpt_ids.extend(ids)
            runner.message_hub.update_info('keep_ckpt_ids', ids)
        filename = self.filename_tmpl.format(step)
        path = self.file_backend.join_path(self.out_dir, filename)
        previous = self.last_ckpt if hasattr(self, 'last_ckpt') else None
        # The saved message hub names this very file, as mmengine's hook does.
        runner.message_hub.update_info('last_ckpt', path)
        try:
            self._write(runner, filename, file_client_args=self.file_client_args,
                        save_optimizer=self.save_optimizer, save_param_scheduler=self.save_param_scheduler,
                        meta=meta, by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        except BaseException:
            if previous is not None:
                runner.message_hub.update_info('last_ckpt', previous)
            raise
        self.last_ckpt = path
        if not is_main_process():
            return
        self.point_to(runner, path)
        for old in outdated:
            old_path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old))
            if old_path != path:
                self._remove(old_path)

    def point_to(self, runner, path):
        """Make the work dir's ``last_checkpoint`` name ``path`` (rank 0 only; atomically on a local disk)."""
        if not is_main_process():
            return
        pointer = osp.join(runner.work_dir, 'last_checkpoint')
        if self._local:
            with write_errors(pointer, _temp_name(pointer), runner.work_dir):
                atomic_write(pointer, path)
        else:
            with open(pointer, 'w') as f:
                f.write(path)

    def _save_best_checkpoint(self, runner, metrics):
        """mmengine's logic, with the best checkpoint written atomically and its predecessor removed after."""
        deferred = []
        own_remove = self.file_backend.remove
        self.file_backend.remove = deferred.append  # the superseded best file: removed once the new one is in
        runner.save_checkpoint = lambda out_dir, filename, **kw: self._write(runner, filename, **kw)
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            del runner.save_checkpoint  # back to the class's method
            self.file_backend.remove = own_remove
        for path in deferred:
            own_remove(path)


def use_safe_checkpoints(cfg):
    """Make the config's checkpoint hook a :class:`SafeCheckpointHook` (mmengine's is the default one)."""
    hooks = cfg.setdefault('default_hooks', {})
    hook = hooks.get('checkpoint')
    if hook is None:
        return
    kind = hook.get('type', 'CheckpointHook')
    if kind in ('CheckpointHook', CheckpointHook):
        hook['type'] = 'SafeCheckpointHook'
        hook.pop('_scope_', None)  # registered in mmengine's root registry, found from every scope
