"""The command line of ``tools/train.py`` and ``tools/test.py`` folded into the config.

Each function takes the loaded config and one option, checks what the user can get wrong (a
:class:`~vmamba.errors.ToolError` with what to do instead) and changes the config the way the
codebases' own tools do, so the same configs behave the same under our tools and theirs. Two fixes make
them run on a CPU-only machine: ``--amp`` says plainly that it needs CUDA (mmengine's
``AmpOptimWrapper`` would assert), and ``persistent_workers=True`` with ``num_workers=0`` (which torch's
DataLoader rejects) is dropped.
"""
import os
import os.path as osp
import warnings

import torch

from vmamba.errors import ToolError

from .adapters import lookup

__all__ = ['LOADERS', 'setup_dynamo_cache', 'default_work_dir', 'apply_amp', 'apply_auto_scale_lr',
           'apply_resume', 'apply_scope_defaults', 'fix_dataloaders']

#: The config's dataloaders, in the order the tools read them.
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def setup_dynamo_cache():
    """Honour ``DYNAMO_CACHE_SIZE_LIMIT`` (as mmdet's tools do) to bound recompilations under torch.compile."""
    limit = os.environ.get('DYNAMO_CACHE_SIZE_LIMIT')
    if limit:
        import torch._dynamo
        torch._dynamo.config.cache_size_limit = int(limit)


def default_work_dir(cfg, config_path, work_dir=None):
    """CLI ``--work-dir`` > ``work_dir`` in the config > ``./work_dirs/<config name>``."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def apply_amp(cfg):
    """Switch the optimizer wrapper to mmengine's ``AmpOptimWrapper`` (fp16 + dynamic loss scaling)."""
    if not torch.cuda.is_available():
        raise ToolError('--amp needs a CUDA GPU (mmengine\'s AmpOptimWrapper runs fp16 with a CUDA loss scaler) '
                        'and none is visible. Run without --amp on this machine.')
    wrapper = cfg.optim_wrapper
    kind = wrapper.get('type', 'OptimWrapper')
    if kind == 'AmpOptimWrapper':
        warnings.warn('--amp: the config already uses AmpOptimWrapper; nothing to change.')
        return
    if kind != 'OptimWrapper':
        raise ToolError(f'--amp only replaces a plain OptimWrapper, but the config uses {kind!r}. '
                        'Set optim_wrapper.type in the config instead.')
    wrapper.type = 'AmpOptimWrapper'
    wrapper.setdefault('loss_scale', 'dynamic')


def apply_auto_scale_lr(cfg):
    """Enable mmengine's linear LR scaling by ``total batch / auto_scale_lr.base_batch_size``."""
    scale = cfg.get('auto_scale_lr')
    if not scale or 'base_batch_size' not in scale:
        raise ToolError('--auto-scale-lr needs `auto_scale_lr = dict(enable=False, base_batch_size=N)` in the '
                        'config (N = the total batch size its learning rate was tuned for).')
    scale.enable = True


def apply_resume(cfg, resume):
    """``--resume`` alone resumes from the latest checkpoint in the work dir; ``--resume PATH`` from PATH."""
    if resume is None:
        return
    if resume == 'auto':
        cfg.resume, cfg.load_from = True, None
        return
    if '://' not in resume and not osp.isfile(resume):
        raise ToolError(f'--resume: no checkpoint file at {resume!r}.')
    cfg.resume, cfg.load_from = True, resume


def apply_scope_defaults(cfg):
    """Dataloader defaults that a codebase's own tools add and its configs rely on.

    mmpretrain's tools default ``collate_fn`` to ``default_collate`` (its configs don't set it; mmengine's
    own default is ``pseudo_collate``).
    """
    adapter = lookup(cfg)
    if adapter is not None and adapter.default_collate:
        for key in LOADERS:
            if cfg.get(key):
                cfg[key].setdefault('collate_fn', dict(type='default_collate'))


def fix_dataloaders(cfg):
    """Drop ``persistent_workers`` where ``num_workers == 0`` (torch's DataLoader rejects the pair)."""
    for key in LOADERS:
        loader = cfg.get(key)
        if loader and loader.get('num_workers', 0) == 0 and loader.get('persistent_workers'):
            loader.persistent_workers = False
