"""Strict checkpoint loading for ``tools/test.py``: a checkpoint that does not fit the model is an error.

mmengine's ``Runner.load_checkpoint`` loads non-strictly: keys the model lacks are dropped, keys the
checkpoint lacks keep their random initialisation, and mis-shaped tensors are skipped, each with a warning
in the log. Testing then scores a partly random model (a classification checkpoint on a segmentation config
"reaches" an mIoU of 8) and exits 0. :class:`StrictLoadHook` compares the checkpoint's ``state_dict`` with
the model before it is loaded and raises :class:`CheckpointFitError` listing the missing, unexpected and
mis-shaped keys (the comparison is :class:`vmamba.models.checkpoint.StateDictFit`, the one behind every
"does not fit" message). ``tools/test.py --partial`` skips it (mmengine's behaviour, the warnings stay).
"""
from mmengine.hooks import Hook
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.registry import HOOKS

from vmamba.errors import ToolError
from vmamba.models.checkpoint import StateDictFit, strip_module

__all__ = ['CheckpointFitError', 'StrictLoadHook', 'add_strict_loading']


class CheckpointFitError(ToolError):
    """The checkpoint's weights do not fit the model of the config."""


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
        problems = StateDictFit(model, strip_module(state_dict)).problems(counted=True)
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
