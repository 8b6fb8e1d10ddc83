"""vmamba: the VMamba visual state-space model for classification, detection and segmentation."""
from .compat import patch_mmengine_checkpoint_loading, quiet_pkg_resources_notice
from .version import __version__

quiet_pkg_resources_notice()  # before anything imports mmengine
patch_mmengine_checkpoint_loading()

from .models import VSSM, VMamba, ARCH_SETTINGS  # noqa: E402

__all__ = ['VSSM', 'VMamba', 'ARCH_SETTINGS', '__version__']
