"""Compatibility fixes applied when ``vmamba`` is imported.

torch >= 2.6 makes ``torch.load`` default to ``weights_only=True``. mmengine 0.10.7 calls ``torch.load``
without that argument, so loading its own checkpoints (which hold the message hub, optimizer and scheduler
state as Python objects) fails with ``Unsupported global ... HistoryBuffer``: ``--resume``, ``load_from``
and ``init_model`` all break. We re-register mmengine's loaders for local files and URLs so that a file
the user points at is loaded with :func:`vmamba.models.checkpoint.load_checkpoint_file`, which tries the
safe loader first and falls back to a full unpickle. Nothing else in torch is changed.

The stack is pinned to setuptools < 82 because mmengine, mmcv and the task packages still import
``pkg_resources``; setuptools then prints a deprecation notice about that import, several times per run, which
no user of this project can act on. :func:`quiet_pkg_resources_notice` hides that one message (it has to run
before the first import of mmengine, hence first thing in ``vmamba/__init__.py``).
"""
import os.path as osp
import warnings

import torch

__all__ = ['patch_mmengine_checkpoint_loading', 'quiet_pkg_resources_notice',
           'map_task_packages_to_installed_distributions']


def quiet_pkg_resources_notice():
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)


def patch_mmengine_checkpoint_loading():
    if tuple(int(v) for v in torch.__version__.split('+')[0].split('.')[:2]) < (2, 6):
        return
    try:
        from mmengine.runner.checkpoint import CheckpointLoader
    except ImportError:  # mmengine is optional for the bare model
        return

    from vmamba.models.checkpoint import load_checkpoint_file

    @CheckpointLoader.register_scheme(prefixes='', force=True)
    def load_from_local(filename, map_location):
        filename = osp.expanduser(filename)
        if not osp.isfile(filename):
            raise FileNotFoundError(f'{filename} can not be found.')
        return load_checkpoint_file(filename, map_location=map_location)

    @CheckpointLoader.register_scheme(prefixes=('http://', 'https://'), force=True)
    def load_from_http(filename, map_location=None, model_dir=None, progress=True):
        return torch.hub.load_state_dict_from_url(filename, model_dir=model_dir, map_location=map_location,
                                                  progress=progress, weights_only=False)


def map_task_packages_to_installed_distributions():
    """Point mmengine's import-name -> distribution table at the distributions actually installed.

    mmengine resolves ``mmseg::``/``mmdet::`` base configs through that table (``mmseg`` ->
    ``mmsegmentation``). OneDL's fork installs ``mmseg`` as ``onedl-mmsegmentation``, so with the table as
    shipped every segmentation config stops at "mmsegmentation is not installed" (or, beside an upstream
    install, reads upstream's configs). Only entries whose distribution does not provide the import are
    changed, so on the upstream stack this does nothing.
    """
    try:
        from mmengine.config import utils as config_utils
    except ImportError:  # mmengine is optional for the bare model
        return
    table = getattr(config_utils, 'MODULE2PACKAGE', None) or getattr(config_utils, 'PKG2PROJECT', None)
    if table is None:
        return
    from vmamba.mmstack import DISTRIBUTIONS, installed
    for module in DISTRIBUTIONS:
        if module in table:
            found = installed(module)
            if found and found[0] != table[module]:
                table[module] = found[0]  # the same dict object mmengine's registry and Config use
