"""VMamba models. Read in this order: variants.py, layers.py, ss2d.py, vmamba.py, checkpoint.py."""
from .checkpoint import (CheckpointMismatchError, extract_state_dict, guess_arch, load_checkpoint_file,
                         load_official_weights, load_pretrained)
from .ss2d import SS2D
from .variants import ARCH_ALIASES, ARCH_SETTINGS, arch_names, resolve_arch
from .vmamba import VMamba, VSSBlock, VSSM

__all__ = ['ARCH_SETTINGS', 'ARCH_ALIASES', 'arch_names', 'resolve_arch', 'SS2D', 'VSSBlock', 'VSSM', 'VMamba',
           'CheckpointMismatchError', 'load_checkpoint_file', 'extract_state_dict', 'guess_arch',
           'load_official_weights', 'load_pretrained']
