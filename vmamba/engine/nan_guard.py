"""Stop training at a non-finite loss, with a message that says where and what to resume from.

mmengine trains on through NaN losses: the weights turn to NaN, the next checkpoint stores them (with
``max_keep_ckpts=1`` in place of the last good one) and the run ends with status 0. :class:`NonFiniteLossHook`
checks every logged loss term after each iteration and raises :class:`NonFiniteError` (a ``ToolError``,
so ``tools/train.py`` prints it and exits with status 1), naming the iteration, the terms that went
non-finite and the last checkpoint written. It runs before the checkpoint hook of the same iteration, and
:class:`~vmamba.engine.checkpointing.SafeCheckpointHook` additionally refuses to save non-finite weights
(a loss is computed before the update, so a bad step shows in the weights first).

``max_skipped`` tolerates that many *consecutive* non-finite iterations: meant for mixed precision, whose
loss scaler skips those optimizer steps. With a plain ``OptimWrapper`` a non-finite loss already spoils the
weights, so the default is 0 (stop at the first one).
"""
import math
import os.path as osp

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from vmamba.errors import ToolError

__all__ = ['NonFiniteError', 'NonFiniteLossHook', 'add_nan_guard', 'last_good_checkpoint']


class NonFiniteError(ToolError):
    """Training produced a NaN or infinite loss (or weights)."""


def last_good_checkpoint(runner):
    """One sentence naming the newest checkpoint on disk, for the stop message."""
    path = runner.message_hub.get_info('last_ckpt')
    if path and osp.isfile(path):
        return f'Last good checkpoint: {path} (resume with --resume {path}).'
    return 'No checkpoint was written before this point.'


def _value(v):
    if isinstance(v, torch.Tensor):
        return v.detach().float().mean().item() if v.numel() else 0.0
    return float(v)


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Raise :class:`NonFiniteError` after ``max_skipped`` consecutive iterations with a non-finite loss."""

    priority = 'VERY_HIGH'  # before the logger and checkpoint hooks of the same iteration

    def __init__(self, max_skipped=0):
        if int(max_skipped) < 0:
            raise ValueError(f'NonFiniteLossHook: max_skipped must be >= 0, got {max_skipped}')
        self.max_skipped = int(max_skipped)
        self.skipped = 0

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if not outputs:
            return
        bad = {k: _value(v) for k, v in outputs.items()
               if ('loss' in k) and isinstance(v, (torch.Tensor, float, int)) and not math.isfinite(_value(v))}
        if not bad:
            self.skipped = 0
            return
        self.skipped += 1
        terms = ', '.join(f'{k}={v}' for k, v in bad.items())
        if self.skipped <= self.max_skipped:
            runner.logger.warning(f'Iteration {runner.iter + 1}: non-finite loss ({terms}); skipped step '
                                  f'{self.skipped} of at most {self.max_skipped} in a row.')
            return
        streak = f' ({self.skipped} iterations in a row)' if self.skipped > 1 else ''
        raise NonFiniteError(
            f'Training stopped at iteration {runner.iter + 1}: non-finite loss{streak}: {terms}. '
            f'{last_good_checkpoint(runner)} Lower the learning rate (or enable gradient clipping); '
            'with mixed precision, allow skipped steps with --max-skipped-steps N.')


def add_nan_guard(cfg, max_skipped=None):
    """Add :class:`NonFiniteLossHook` to the config's ``custom_hooks`` (once); ``max_skipped`` (the
    command line's) overrides the config's own setting, which defaults to 0."""
    hooks = list(cfg.get('custom_hooks') or [])
    mine = [h for h in hooks if h.get('type') in ('NonFiniteLossHook', NonFiniteLossHook)]
    if not mine:
        mine = [dict(type='NonFiniteLossHook')]
        hooks.append(mine[0])
    if max_skipped is not None:
        mine[0]['max_skipped'] = max_skipped
    cfg.custom_hooks = hooks
