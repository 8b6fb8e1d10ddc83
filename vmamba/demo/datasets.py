"""Dataset classes for the demo sets that have no task module of their own (registered on import).

``DemoShapesImageNet`` (mmpretrain): the single-shape classification set of :mod:`vmamba.demo.shapes_cls`,
written to ``data_root`` on first use; the detection demo's pretraining reads it.
"""
from mmpretrain.datasets import CustomDataset
from mmpretrain.registry import DATASETS

from vmamba.demo import shapes_cls

__all__ = ['DemoShapesImageNet']


@DATASETS.register_module()
class DemoShapesImageNet(CustomDataset):
    """mmpretrain's ``CustomDataset`` (class folders) over ``root/{split}/``, generated if missing.

    Args:
        split: ``'train'`` or ``'val'``.
        demo_cfg: settings for :func:`vmamba.demo.shapes_cls.ensure_shapes_cls`; every dataset over the same
            ``data_root`` must pass the same ones.
    """

    GENERATES_DATA = True  # tools/train.py skips its "data not found" check for this dataset

    def __init__(self, data_root='data/demo_shapes_cls', split='train', demo_cfg=None, **kwargs):
        if split not in shapes_cls.SPLITS:
            raise ValueError(f'DemoShapesImageNet split must be one of {shapes_cls.SPLITS}, got {split!r}')
        shapes_cls.ensure_shapes_cls(data_root, **(demo_cfg or {}))
        kwargs.setdefault('metainfo', dict(classes=shapes_cls.class_folders()))
        super().__init__(data_root=data_root, data_prefix=split, with_label=True, **kwargs)
