"""The two OpenMMLab stacks this project runs on, and which one is installed.

Upstream OpenMMLab's last releases (``mmcv``, ``mmdet``, ``mmsegmentation`` ...) and OneDL's maintained fork
(``onedl-mmcv``, ``onedl-mmdetection`` ...) install the same import names (``mmcv``, ``mmdet``, ``mmseg`` ...)
under different distribution names. Anything that asks "which mmcv is this" must therefore look the import
name up under both names, and, where both are visible (a venv over system site-packages), take the one whose
files the import actually loads. :func:`installed` does that; :data:`STACKS` holds what each stack pins.

Standard library only: ``tools/install.py`` reads this file by path before torch or any OpenMMLab package
is installed.
"""
import importlib.metadata as md
import importlib.util
import os
from typing import NamedTuple, Optional

__all__ = ['DISTRIBUTIONS', 'STACKS', 'DEFAULT_STACK', 'Stack', 'pin', 'installed', 'installed_stack']

#: import name -> the distributions that may provide it, upstream first.
DISTRIBUTIONS = {
    'mmengine': ('mmengine', 'onedl-mmengine'),
    'mmcv': ('mmcv', 'onedl-mmcv'),
    'mmdet': ('mmdet', 'onedl-mmdetection'),
    'mmseg': ('mmsegmentation', 'onedl-mmsegmentation'),
    'mmpretrain': ('mmpretrain', 'onedl-mmpretrain'),
}


class Stack(NamedTuple):
    name: str
    pins: dict            #: import name -> pinned requirement of the distribution that provides it
    no_deps: tuple        #: installed without their declared dependencies (import names or requirements) ...
    real_needs: tuple     #: ... and what those really import, installed in their place
    setuptools: str       #: the setuptools range the stack's own code and mmcv's build need


STACKS = {
    'openmmlab': Stack(
        name='openmmlab',
        pins={'mmengine': 'mmengine==0.10.7', 'mmcv': 'mmcv==2.1.0', 'mmdet': 'mmdet==3.3.0',
              'mmseg': 'mmsegmentation==1.2.2', 'mmpretrain': 'mmpretrain==1.2.0'},
        no_deps=(),
        real_needs=(),
        # mmcv 2.1.0's setup.py and mmengine 0.10.7 import pkg_resources, which setuptools 82 removed.
        setuptools='setuptools>=77.0.3,<82'),
    'onedl': Stack(
        name='onedl',
        pins={'mmengine': 'onedl-mmengine==0.10.12', 'mmcv': 'onedl-mmcv==2.3.6',
              'mmdet': 'onedl-mmdetection==3.5.1', 'mmseg': 'onedl-mmsegmentation==1.4.2',
              'mmpretrain': 'onedl-mmpretrain==1.3.6'},
        # mmdet imports imaug, whose release pins opencv-python(-headless) < 4.13 (pip would downgrade numpy
        # and add a second OpenCV); mmcv and mmseg ask for the GUI build opencv-python beside the headless one.
        no_deps=('mmdet', 'imaug==0.4.3', 'mmseg'),
        real_needs=('addict', 'pyyaml', 'yapf', 'packaging', 'Pillow', 'matplotlib', 'scipy', 'shapely', 'six',
                    'terminaltables', 'tqdm', 'scikit-image', 'imageio', 'prettytable'),
        setuptools='setuptools>=77.0.3'),
}
DEFAULT_STACK = 'openmmlab'


def pin(stack, module):
    """``(distribution, version)`` that ``stack`` pins for import name ``module``."""
    name, _, ver = STACKS[stack].pins[module].partition('==')
    return name, ver


def _package_dir(module):
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.realpath(list(spec.submodule_search_locations)[0])


def installed(module) -> Optional[tuple]:
    """``(distribution, version)`` that provides import name ``module``, or None if it is not installed.

    Of several candidate distributions, the one whose folder the import would load wins (an editable or
    otherwise unusual install falls back to the first one found).
    """
    found = []
    for name in DISTRIBUTIONS.get(module, (module,)):
        found += [(name, d) for d in md.distributions(name=name)]
    if not found:
        return None
    where = _package_dir(module)
    for name, dist in found:
        if where and os.path.realpath(str(dist.locate_file(module))) == where:
            return name, dist.version
    name, dist = found[0]
    return name, dist.version


def installed_stack() -> Optional[str]:
    """'onedl' or 'openmmlab', by the distribution that provides mmengine; None without mmengine."""
    found = installed('mmengine')
    if found is None:
        return None
    return 'onedl' if found[0].startswith('onedl-') else 'openmmlab'
