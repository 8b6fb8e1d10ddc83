"""Strict checkpoint loading for ``tools/test.py``: a checkpoint that does not fit the model is an error.

mmengine's ``Runner.load_checkpoint`` loads non-strictly: keys the model lacks are dropped, keys the
checkpoint lacks keep their random initialisation, and mis-shaped tensors are skipped, each with a warning
in the log. Testing then scores a partly random model (a classification checkpoint on a segmentation config
"reaches" an mIoU of 8) and exits 0. :class:`StrictLoadHook` compares the checkpoint's ``state_dict`` with
the model before it is loaded and raises :class:`CheckpointFitError` listing the missing, unexpected and
mis-shaped keys. ``tools/test.py --partial`` skips it (mmengine's behaviour, the warnings stay).
"""
from mmengine.hooks import Hook
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.registry import HOOKS

from .common import ToolError

__all__ = ['CheckpointFitError', 'state_dict_problems', 'StrictLoadHook', 'add_strict_loading']


class CheckpointFitError(ToolError):
    """The checkpoint's weights do not fit the model of the config."""


def _strip_module(state_dict):
    return {(k[len('module.'):] if k.startswith('module.') else k): v for k, v in state_dict.items()}


def state_dict_problems(model, state_dict, shown=6):
    """Lines describing how ``state_dict`` differs from ``model``'s (empty when it fits exactly)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f'{k} {tuple(state_dict[k].shape)} in the checkpoint, {tuple(own[k].shape)} in the model'
              for k in state_dict if k in own and hasattr(state_dict[k], 'shape')
              and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    lines = []
    for title, items in (('missing', missing), ('unexpected', unexpected), ('mis-shaped', shapes)):
        if items:
            more = f', ... ({len(items)} in all)' if len(items) > shown else ''
            lines.append(f'{len(items)} {title} keys: {", ".join(items[:shown])}{more}')
    return lines


@HOOKS.register_module()
class StrictLoadHook(Hook):
    """Raise :class:`CheckpointFitError` unless the loaded checkpoint fits the model exactly.

    Runs after the other ``after_load_checkpoint`` hooks (which may convert the checkpoint in place, as
    the classification task's ``VMambaCheckpointHook`` does for official files).
    """

    priority = 'LOWEST'

    def __init__(self, source=None):
        self.source = source

    def after_load_checkpoint(self, runner, checkpoint):
        model = runner.model
        while is_model_wrapper(model) or isinstance(model, BaseTTAModel):  # as mmengine's load_state_dict
            model = model.module
        state_dict = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else {}
        problems = state_dict_problems(model, _strip_module(state_dict))
        if problems:
            source = self.source or runner._load_from or 'the checkpoint'
            raise CheckpointFitError(
                f'{source} does not fit the model of this config ({type(model).__name__}): '
                + '; '.join(problems)
                + '. Use the checkpoint trained with this config, or pass --partial to load what fits '
                'and test the rest at random initialisation.')


def add_strict_loading(cfg, source=None):
    """Add :class:`StrictLoadHook` to the config's ``custom_hooks`` (once)."""
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(h.get('type') in ('StrictLoadHook', StrictLoadHook) for h in hooks):
        hooks.append(dict(type='StrictLoadHook', source=source))
    cfg.custom_hooks = hooks
