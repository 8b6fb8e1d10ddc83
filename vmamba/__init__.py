"""vmamba: the VMamba visual state-space model for classification, detection and segmentation."""
from .compat import (map_task_packages_to_installed_distributions, patch_mmengine_checkpoint_loading,
                     quiet_pkg_resources_notice)
from .version import __version__

quiet_pkg_resources_notice()  # before anything imports mmengine
patch_mmengine_checkpoint_loading()
map_task_packages_to_installed_distributions()

from .models import VSSM, VMamba, ARCH_SETTINGS  # noqa: E402

__all__ = ['VSSM', 'VMamba', 'ARCH_SETTINGS', '__version__']
