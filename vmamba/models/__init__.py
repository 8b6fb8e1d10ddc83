"""VMamba models. Read in this order: variants.py, layers.py, ss2d.py, vmamba.py, checkpoint_file.py, checkpoint.py."""
from .checkpoint import (CheckpointMismatchError, CheckpointReadError, CheckpointRefusedError, StateDictFit,
                         check_state_dict_fits, extract_state_dict, guess_arch, load_checkpoint_file,
                         load_official_weights, load_pretrained, strip_module)
from .ss2d import SS2D
from .variants import (ARCH_ALIASES, ARCH_SETTINGS, arch_names, backbone_channels, official_checkpoint,
                       resolve_arch)
from .vmamba import VMamba, VSSBlock, VSSM

__all__ = ['ARCH_SETTINGS', 'ARCH_ALIASES', 'arch_names', 'resolve_arch', 'backbone_channels',
           'official_checkpoint', 'SS2D', 'VSSBlock', 'VSSM', 'VMamba',
           'CheckpointMismatchError', 'CheckpointReadError', 'CheckpointRefusedError', 'load_checkpoint_file',
           'extract_state_dict', 'guess_arch', 'strip_module', 'StateDictFit', 'check_state_dict_fits',
           'load_official_weights', 'load_pretrained']
