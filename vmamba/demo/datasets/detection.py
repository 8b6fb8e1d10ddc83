"""The detection demo set as an mmdet dataset, written to ``data_root`` on first use.

Import this module (``custom_imports = dict(imports=['vmamba.models', 'vmamba.demo.datasets.detection'])``) to
register :class:`DemoCocoDataset` in mmdet's ``DATASETS``. The VMamba backbone itself needs no mmdet
code: it lives in mmengine's root registry and builds by bare name (``type='VMamba'``) under mmdet.
"""
from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS

from vmamba.demo import coco as demo_coco

__all__ = ['DemoCocoDataset']


@DATASETS.register_module()
class DemoCocoDataset(CocoDataset):
    """mmdet's ``CocoDataset`` over the synthetic shapes set, written to ``data_root`` on first use.

    Args:
        split: ``'train'`` or ``'val'``; sets ``ann_file`` and ``data_prefix`` to the generator's layout.
        generate: settings for :func:`vmamba.demo.coco.ensure_demo_coco` (sizes, seed). Every dataset over
            the same ``data_root`` must pass the same settings; a folder made with other settings is an error.
        **kwargs: everything ``CocoDataset`` takes (``pipeline``, ``filter_cfg``, ``test_mode``...).

    The data exists once the dataset is built, which mmengine does before it builds the evaluator, so a
    ``CocoMetric`` reading ``data_root + ann_file(split)`` finds its file.
    """

    METAINFO = dict(classes=demo_coco.CLASSES,
                    palette=[(220, 20, 60), (0, 130, 230), (250, 170, 30), (120, 60, 200)])
    #: Read by ``vmamba.tasks.data_checks.check_data``: no missing-data error for this dataset.
    GENERATES_DATA = True

    def __init__(self, split='train', generate=None, data_root='data/demo_coco/', **kwargs):
        if split not in demo_coco.SPLITS:
            raise ValueError(f'DemoCocoDataset split must be one of {demo_coco.SPLITS}, got {split!r}')
        demo_coco.ensure_demo_coco(data_root.rstrip('/'), **(generate or {}))
        kwargs.setdefault('ann_file', demo_coco.ann_file(split))
        kwargs.setdefault('data_prefix', dict(img=demo_coco.image_dir(split)))
        super().__init__(data_root=data_root, **kwargs)
