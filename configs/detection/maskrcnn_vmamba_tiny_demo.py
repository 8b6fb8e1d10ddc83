"""The tiny 1x config on the built-in synthetic shapes set, sized to train in minutes on a CPU.

Only the data, the input size, the schedule, the class count and the number of RoIs per image differ from
maskrcnn_vmamba_tiny_1x.py: the detector, backbone, optimizer and evaluation (mmdet's CocoMetric, bbox +
segm mAP) are the real ones. The set (vmamba.demo.coco: 4 shape classes, 96x96 images, at most 3 shapes
each) is written to data/demo_coco/ the first time the dataset is built. The backbone starts from scratch
(no ImageNet checkpoint needed).

With 1-3 objects on a 96 px image, COCO's 1000 proposals and 512 sampled RoIs per image are mostly
duplicates; 100 proposals and 32 sampled RoIs keep the RoI heads (the 4-conv mask head above all) from
dominating CPU time.

    python tools/train.py configs/detection/maskrcnn_vmamba_tiny_demo.py
"""
_base_ = ['./maskrcnn_vmamba_tiny_1x.py']
import vmamba.demo.coco as _shapes  # noqa: E402  (modules are dropped from the config after it is read)

custom_imports = dict(imports=['vmamba.models', 'vmamba.tasks.detection'], allow_failed_imports=False)

demo_data = dict(num_train=48, num_val=16, image_size=96, max_objects=3, seed=0)
data_root = 'data/demo_coco/'
image_scale = (96, 96)

model = dict(
    backbone=dict(init_cfg=None),
    roi_head=dict(bbox_head=dict(num_classes=len(_shapes.CLASSES)),
                  mask_head=dict(num_classes=len(_shapes.CLASSES))),
    train_cfg=dict(rpn_proposal=dict(max_per_img=100), rcnn=dict(sampler=dict(num=32))),
    test_cfg=dict(rpn=dict(max_per_img=100)))

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
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, split='train', pipeline=train_pipeline,
                 filter_cfg=dict(filter_empty_gt=True, min_size=32), **_dataset))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, split='val', test_mode=True, pipeline=test_pipeline, **_dataset))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + _shapes.ann_file('val'))
test_evaluator = val_evaluator
del _dataset

max_epochs = 8  # 12 iterations each
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=24),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[7], gamma=0.1),
]
optim_wrapper = dict(optimizer=dict(lr=4e-4))
auto_scale_lr = dict(base_batch_size=4)

default_hooks = dict(logger=dict(interval=6), checkpoint=dict(interval=1, max_keep_ckpts=2))
randomness = dict(seed=0)
