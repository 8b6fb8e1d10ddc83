"""The published VMamba variants: the one table every model, config, test and tool reads.

Two families were released (Liu et al., NeurIPS 2024; official repo MzeroMiko/VMamba):

* ``vanilla_*`` ("Vanilla-VMamba", forward type v0, the paper's first design): SS2D with d_state 16,
  ssm_ratio 2 and a SiLU(z) gate, no MLP in the block, a 4x4 patchify stem and Swin-style patch merging.
* ``*_s2l*`` / ``*_s1l*`` (forward type v05_noz, the final design): d_state 1, no z gate, an MLP (ratio 4)
  after every SS2D, a two-conv stem and 3x3 stride-2 conv downsampling. ``sXlY`` reads "ssm_ratio X,
  Y blocks in stage 3".

``tiny``, ``small`` and ``base`` are the rows the paper headlines.

Configs read :func:`backbone_channels` and :func:`official_checkpoint` from here, so that neck widths and
checkpoint names are derived from this table instead of being typed again.
"""
import copy
import os.path as osp

from vmamba.errors import ToolError

__all__ = ['ARCH_SETTINGS', 'ARCH_ALIASES', 'CHECKPOINT_DIR', 'RELEASES_URL', 'resolve_arch', 'arch_names',
           'backbone_channels', 'official_checkpoint']

#: Where configs expect the official ImageNet checkpoints (relative to the working directory).
CHECKPOINT_DIR = 'checkpoints'
#: The official release page (the checkpoint files are assets of its releases).
RELEASES_URL = 'https://github.com/MzeroMiko/VMamba/releases'

_VANILLA = dict(version='v0', d_state=16, ssm_ratio=2.0, mlp_ratio=0.0, gated=True, conv_bias=True,
                stem='patchify', downsample='merge')
_V2 = dict(version='v2', d_state=1, mlp_ratio=4.0, gated=False, conv_bias=False,
           stem='conv', downsample='conv')

#: name -> settings. ``dims`` is the stage-0 width (stage i has dims * 2**i channels);
#: ``drop_path_rate`` is the official ImageNet value; ``checkpoint`` the official release file name.
ARCH_SETTINGS = {
    'vanilla_tiny': dict(_VANILLA, dims=96, depths=(2, 2, 9, 2), drop_path_rate=0.2,
                         checkpoint='vssmtiny_dp01_ckpt_epoch_292.pth'),
    'vanilla_small': dict(_VANILLA, dims=96, depths=(2, 2, 27, 2), drop_path_rate=0.3,
                          checkpoint='vssmsmall_dp03_ckpt_epoch_238.pth'),
    'vanilla_base': dict(_VANILLA, dims=128, depths=(2, 2, 27, 2), drop_path_rate=0.6,
                         checkpoint='vssmbase_dp06_ckpt_epoch_241.pth'),
    'tiny_s2l5': dict(_V2, ssm_ratio=2.0, dims=96, depths=(2, 2, 5, 2), drop_path_rate=0.2,
                      checkpoint='vssm_tiny_0230_ckpt_epoch_262.pth'),
    'small_s2l15': dict(_V2, ssm_ratio=2.0, dims=96, depths=(2, 2, 15, 2), drop_path_rate=0.3,
                        checkpoint='vssm_small_0229_ckpt_epoch_222.pth'),
    'base_s2l15': dict(_V2, ssm_ratio=2.0, dims=128, depths=(2, 2, 15, 2), drop_path_rate=0.6,
                       checkpoint='vssm_base_0229_ckpt_epoch_237.pth'),
    'tiny_s1l8': dict(_V2, ssm_ratio=1.0, dims=96, depths=(2, 2, 8, 2), drop_path_rate=0.2,
                      checkpoint='vssm1_tiny_0230s_ckpt_epoch_264.pth'),
    'small_s1l20': dict(_V2, ssm_ratio=1.0, dims=96, depths=(2, 2, 20, 2), drop_path_rate=0.3,
                        checkpoint='vssm1_small_0229s_ckpt_epoch_240.pth'),
    'base_s1l20': dict(_V2, ssm_ratio=1.0, dims=128, depths=(2, 2, 20, 2), drop_path_rate=0.5,
                       checkpoint='vssm1_base_0229s_ckpt_epoch_225.pth'),
}

#: The paper's headline rows.
ARCH_ALIASES = {'tiny': 'tiny_s1l8', 'small': 'small_s2l15', 'base': 'base_s2l15'}

# Keys a custom ``arch`` dict must give; the rest default to the final (v2) design.
_REQUIRED = ('dims', 'depths')
_DEFAULTS = dict(_V2, ssm_ratio=1.0, drop_path_rate=0.1, checkpoint=None)


def arch_names():
    """All accepted names: the nine variants and the aliases."""
    return sorted(ARCH_SETTINGS) + sorted(ARCH_ALIASES)


def resolve_arch(arch):
    """Return ``(name, settings)`` for a variant name, an alias, or a custom settings dict.

    A custom dict needs ``dims`` and ``depths``; other keys default to the final design (d_state 1,
    no gate, MLP 4x, conv stem/downsample). Unknown keys are rejected so typos don't pass silently.
    """
    if isinstance(arch, str):
        name = ARCH_ALIASES.get(arch.lower(), arch.lower())
        if name not in ARCH_SETTINGS:
            raise KeyError(f'Unknown VMamba arch {arch!r}. Choose one of: {", ".join(arch_names())}, '
                           'or pass a dict with at least "dims" and "depths".')
        return name, copy.deepcopy(ARCH_SETTINGS[name])
    if isinstance(arch, dict):
        missing = [k for k in _REQUIRED if k not in arch]
        unknown = sorted(set(arch) - set(_DEFAULTS) - set(_REQUIRED))
        if missing or unknown:
            raise KeyError(f'Custom VMamba arch dict: missing keys {missing}, unknown keys {unknown}. '
                           f'Allowed keys: {sorted(set(_DEFAULTS) | set(_REQUIRED))}.')
        settings = dict(_DEFAULTS, **copy.deepcopy(arch))
        if len(settings['depths']) != 4:
            raise ValueError(f'depths must have 4 entries (one per stage), got {settings["depths"]}')
        return 'custom', settings
    raise TypeError(f'arch must be a variant name or a dict, got {type(arch).__name__}')


def backbone_channels(arch):
    """Channels of the four backbone outputs (stage i has ``dims * 2**i``), for neck/head ``in_channels``."""
    _, settings = resolve_arch(arch)
    return [settings['dims'] * 2**i for i in range(4)]


def official_checkpoint(arch, directory=CHECKPOINT_DIR):
    """Path of the official ImageNet checkpoint of ``arch`` under ``directory`` (the release file name)."""
    name, settings = resolve_arch(arch)
    if not settings.get('checkpoint'):
        raise ToolError(f'No official checkpoint is known for VMamba arch {name!r}.')
    return osp.join(directory, settings['checkpoint'])
