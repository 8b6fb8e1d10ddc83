"""Compatibility fixes applied when ``vmamba`` is imported.

Checkpoint loading: mmengine 0.10.7 calls ``torch.load`` without ``weights_only``, which under torch >= 2.6
refuses its own checkpoints (``Unsupported global ... HistoryBuffer``: ``--resume``, ``load_from`` and
``init_model`` break) and under older torch unpickles anything. We re-register mmengine's loaders for
local files and ``http(s)://`` URLs (and point its ``open-mmlab://``/``torchvision://`` loaders at the
same URL loader) so that every file is read by
:func:`vmamba.models.checkpoint_file.load_checkpoint_file`: torch's weights-only unpickler with the
project's allowlist, a full unpickle only on the user's opt-in. URLs are downloaded into torch hub's
checkpoint cache first. Nothing else in torch is changed.

The stack is pinned to setuptools < 82 because mmengine, mmcv and the task packages still import
``pkg_resources``; setuptools then prints a deprecation notice about that import, several times per run, which
no user of this project can act on. :func:`quiet_pkg_resources_notice` hides that one message (it has to run
before the first import of mmengine, hence first thing in ``vmamba/__init__.py``).
"""
import os.path as osp
import warnings

__all__ = ['patch_mmengine_checkpoint_loading', 'quiet_pkg_resources_notice',
           'map_task_packages_to_installed_distributions']


def quiet_pkg_resources_notice():
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)


def patch_mmengine_checkpoint_loading():
    try:
        from mmengine.runner import checkpoint as mm_checkpoint
    except ImportError:  # mmengine is optional for the bare model
        return

    from vmamba.models.checkpoint_file import load_checkpoint_file, load_url

    @mm_checkpoint.CheckpointLoader.register_scheme(prefixes='', force=True)
    def load_from_local(filename, map_location):
        filename = osp.expanduser(filename)
        if not osp.isfile(filename):
            raise FileNotFoundError(f'{filename} can not be found.')
        return load_checkpoint_file(filename, map_location=map_location)

    @mm_checkpoint.CheckpointLoader.register_scheme(prefixes=('http://', 'https://'), force=True)
    def load_from_http(filename, map_location=None, model_dir=None, progress=True):
        return load_url(filename, map_location=map_location, model_dir=model_dir, progress=progress)

    mm_checkpoint.load_from_http = load_from_http  # what its open-mmlab:// and torchvision:// loaders call


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
