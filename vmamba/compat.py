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

__all__ = ['patch_mmengine_checkpoint_loading', 'quiet_pkg_resources_notice']


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
