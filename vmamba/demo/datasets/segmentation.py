"""The segmentation demo set as an mmseg dataset, written to ``data_root`` on first use.

Import this module (``custom_imports``) to register :class:`DemoADE20KDataset` in mmseg's ``DATASETS``.
Only the dataset is ours: the VMamba backbone is registered by ``vmamba.models``, and the UperNet/FCN
heads, data pipeline, metric and runner are mmseg's own.
"""
import os.path as osp

from mmseg.datasets import ADE20KDataset
from mmseg.registry import DATASETS

from vmamba.demo.ade20k import generate_demo_ade20k, is_demo_ade20k

__all__ = ['DemoADE20KDataset']


@DATASETS.register_module()
class DemoADE20KDataset(ADE20KDataset):
    """mmseg's ``ADE20KDataset`` over the synthetic demo set, written on first use.

    If ``data_root`` does not hold a complete ADE20K-layout set yet, it is generated there with
    :func:`vmamba.demo.ade20k.generate_demo_ade20k` (``demo_cfg`` is passed on: ``num_train``, ``num_val``,
    ``size``, ``seed``), so the demo config runs from a fresh checkout with nothing to download. An existing
    set is used as it is. Everything else (file discovery, ``reduce_zero_label``, the class subset through
    ``metainfo``) is ``ADE20KDataset``'s.
    """
    #: Tells the tools' data check (``vmamba.tasks.data_checks.check_data``) that a missing folder is fine.
    GENERATES_DATA = True

    def __init__(self, data_root='data/demo_ade20k', demo_cfg=None, **kwargs):
        if not data_root:
            raise ValueError('DemoADE20KDataset needs a data_root to read (or write) the demo set.')
        data_root = osp.expanduser(str(data_root))
        if not is_demo_ade20k(data_root):
            generate_demo_ade20k(data_root, **(demo_cfg or {}))
        super().__init__(data_root=data_root, **kwargs)
