"""Shared helpers for the classification tests: configs, small variants of both designs, runners.

(A uniquely named module rather than conftest.py, which other test folders also have.)
"""
import os.path as osp
import uuid

from mmengine.config import Config

from vmamba.models import ARCH_SETTINGS

from repo_testlib import CONFIGS

CONFIG_DIR = osp.join(CONFIGS, 'classification')

#: Every ImageNet config and the variant it must build (tiny = s1l8, small/base = s2l15).
VARIANT_CONFIGS = {
    'vmamba_tiny_in1k.py': 'tiny_s1l8',
    'vmamba_small_in1k.py': 'small_s2l15',
    'vmamba_base_in1k.py': 'base_s2l15',
    'vmamba_tiny_s2l5_in1k.py': 'tiny_s2l5',
    'vmamba_small_s1l20_in1k.py': 'small_s1l20',
    'vmamba_base_s1l20_in1k.py': 'base_s1l20',
    'vmamba_vanilla_tiny_in1k.py': 'vanilla_tiny',
    'vmamba_vanilla_small_in1k.py': 'vanilla_small',
    'vmamba_vanilla_base_in1k.py': 'vanilla_base',
}


def small_arch(variant, depths=(1, 1, 2, 1)):
    """A narrow, shallow custom arch with every design setting of ``variant`` (from the variant table)."""
    settings = {k: v for k, v in ARCH_SETTINGS[variant].items() if k != 'checkpoint'}
    return dict(settings, dims=16, depths=depths)


#: Small stand-ins for the two designs: the final one (tiny_s1l8) and the vanilla one (gated, d_state 16).
SMALL_ARCHS = {'final': small_arch('tiny_s1l8'), 'vanilla': small_arch('vanilla_tiny')}


def load_config(name, arch=None, **options):
    """A classification config, optionally with a custom ``arch`` (and the matching head width)."""
    cfg = Config.fromfile(osp.join(CONFIG_DIR, name))
    if arch is not None:
        cfg.model.backbone.arch = arch
        cfg.model.head.in_channels = arch['dims'] * 2**3
    cfg.merge_from_dict(options)
    return cfg


def build_runner(cfg, work_dir):
    """An mmengine Runner for ``cfg`` (unique experiment name, so several can live in one process)."""
    import vmamba.tasks.classification  # noqa: F401  (registers the hooks)
    import vmamba.demo.datasets.classification  # noqa: F401  (registers the demo dataset)
    from mmengine.runner import Runner
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = f'cls_test_{uuid.uuid4().hex[:8]}'
    return Runner.from_cfg(cfg)
