"""The tiny 1x config on the built-in synthetic shapes set, sized to reach real accuracy in minutes on a CPU.

The detector is the 1x config's: the same VMamba backbone class, FPN, RPN, RoI heads (shared 2-fc box
head, 4-conv FCN mask head), AdamW with the no-decay rule, and mmdet's CocoMetric (bbox + segm mAP).
What differs, and why:

* data: vmamba.demo.coco at 64x64 px (4 shape classes, each in its own colour band, 1-3 per image,
  ``demo_data`` below), written to data/demo_shapes/ the first time the dataset is built;
* backbone width/depth: the demos' small custom arch (``vmamba.demo.DEMO_ARCH``, 32 channels, 1/1/2/1
  blocks) instead of tiny's 96 channels and 2/2/8/2, from scratch (``tools/demo.py --pretrain`` first
  pretrains it on single shapes, configs/classification/vmamba_shapes_pretrain_demo.py, and starts from that
  checkpoint through ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``);
* RoIs: with 1-3 objects on a 64 px image, 100 proposals and 16 sampled RoIs per image (2 positive)
  do the job of COCO's 1000 and 512, and keep the 256-channel mask head from dominating CPU time;
* schedule: a few short epochs at a from-scratch learning rate (warm-up, then cosine), fused AdamW.

    python tools/train.py configs/detection/maskrcnn_vmamba_tiny_demo.py
"""
_base_ = ['./maskrcnn_vmamba_tiny_1x.py']
# Modules and functions imported here are dropped from the config after it is read; only values stay.
from vmamba.demo import DEMO_ARCH as __arch  # noqa: E402  (names starting with __ stay out of the config)
from vmamba.demo import coco as _shapes  # noqa: E402
from vmamba.models.variants import backbone_channels  # noqa: E402

custom_imports = dict(imports=['vmamba.models', 'vmamba.demo.datasets.detection', 'vmamba.demo.hooks'],
                      allow_failed_imports=False)

demo_data = dict(_shapes.DEFAULTS)  # 240 training / 32 validation images of 64 px, 1-3 shapes each, seed 0
data_root = 'data/demo_shapes/'
image_scale = (demo_data['image_size'],) * 2

model = dict(
    # _delete_ replaces the base's arch name by the dict (a name cannot be merged with a dict).
    backbone=dict(arch=dict(__arch, _delete_=True), drop_path_rate=0.0, init_cfg=None),
    neck=dict(in_channels=backbone_channels(__arch)),
    roi_head=dict(bbox_head=dict(num_classes=len(_shapes.CLASSES)),
                  mask_head=dict(num_classes=len(_shapes.CLASSES))),
    train_cfg=dict(rpn_proposal=dict(max_per_img=100), rcnn=dict(sampler=dict(num=8))),
    test_cfg=dict(rpn=dict(max_per_img=100), rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
_dataset = dict(type='DemoCocoDataset', data_root=data_root, generate=demo_data)
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, split='train', pipeline=train_pipeline,
                 filter_cfg=dict(filter_empty_gt=True, min_size=8), **_dataset))
val_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, split='val', test_mode=True, pipeline=test_pipeline, **_dataset))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + _shapes.ann_file('val'))
test_evaluator = val_evaluator
del _dataset

max_epochs = 3  # 30 iterations each
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs, eta_min_ratio=0.02,
         convert_to_iter_based=True),
]
optim_wrapper = dict(optimizer=dict(lr=1e-3, fused=True), clip_grad=dict(max_norm=10.0))
auto_scale_lr = dict(base_batch_size=8)

default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=1, max_keep_ckpts=1))
custom_hooks = [dict(type='DemoVisHook')]  # predictions.png and curves.png in the work directory
randomness = dict(seed=0)
