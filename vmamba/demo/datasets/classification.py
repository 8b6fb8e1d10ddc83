"""mmpretrain datasets over the classification demo sets, written to ``data_root`` on first use.

* :class:`DemoImageNet`: the classification demo's set (:mod:`vmamba.demo.imagenet`), as mmpretrain's
  ``ImageNet``;
* :class:`DemoShapesImageNet`: the single-shape set of :mod:`vmamba.demo.shapes_cls`, which the detection
  demo's pretraining reads.

Import this module (``custom_imports``) to register both in mmpretrain's ``DATASETS``.
"""
from mmpretrain.datasets import CustomDataset, ImageNet
from mmpretrain.registry import DATASETS

from vmamba.demo import shapes_cls
from vmamba.demo.imagenet import demo_set_classes, generate_demo_imagenet

__all__ = ['DemoImageNet', 'DemoShapesImageNet']


@DATASETS.register_module()
class DemoImageNet(ImageNet):
    """mmpretrain's ``ImageNet`` dataset over the synthetic demo set, written on first use.

    If ``data_root`` does not hold a demo set made with ``demo_cfg`` (``num_classes``, ``train_per_class``,
    ``val_per_class``, ``size``, ``seed``; see :func:`vmamba.demo.imagenet.generate_demo_imagenet`), it is
    generated there, so the demo config runs from a fresh checkout. The class names come from the set, so
    ``num_classes`` in ``demo_cfg`` is the one number to keep equal to the head's.
    """

    GENERATES_DATA = True  # tools/train.py skips its "data not found" check for this dataset

    def __init__(self, data_root='data/demo_imagenet', split='train', demo_cfg=None, **kwargs):
        root = generate_demo_imagenet(data_root, **(demo_cfg or {}))
        kwargs.setdefault('metainfo', dict(classes=demo_set_classes(root)))
        super().__init__(data_root=data_root, split=split, **kwargs)


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
