"""The tools' helpers under their former common name, for code written against it (``tools/demo.py``).

They now live by concern: :mod:`.config_transforms`, :mod:`.distributed`, :mod:`.data_checks`,
:mod:`.eval_options`, :mod:`.runner`, :mod:`vmamba.engine.exact_resume` (``StepSeedHook``),
:mod:`vmamba.models.variants` (``backbone_channels``, ``official_checkpoint``) and :mod:`vmamba.errors`
(``ToolError``). New code imports from there.
"""
from vmamba.engine.exact_resume import StepSeedHook, add_step_seed_hook
from vmamba.errors import ToolError
from vmamba.models.variants import CHECKPOINT_DIR, RELEASES_URL, backbone_channels, official_checkpoint

from .config_transforms import (apply_amp, apply_auto_scale_lr, apply_resume, apply_scope_defaults,
                                default_work_dir, fix_dataloaders, setup_dynamo_cache)
from .data_checks import DATA_SOURCES, check_data, check_pretrained
from .distributed import setup_distributed
from .eval_options import add_dump_results, apply_out, apply_show, apply_tta
from .runner import build_runner as _build_runner

__all__ = [
    'ToolError', 'backbone_channels', 'official_checkpoint', 'setup_dynamo_cache', 'default_work_dir',
    'apply_amp', 'apply_auto_scale_lr', 'apply_resume', 'apply_scope_defaults', 'fix_dataloaders',
    'setup_distributed', 'check_data', 'check_pretrained', 'apply_show', 'apply_tta', 'apply_out',
    'add_dump_results', 'StepSeedHook', 'add_step_seed_hook', 'build_runner', 'CHECKPOINT_DIR',
    'RELEASES_URL', 'DATA_SOURCES',
]


def build_runner(cfg):
    """:func:`vmamba.tasks.runner.build_runner` as it was here: errors as raised, not explained."""
    return _build_runner(cfg, explain=False)
