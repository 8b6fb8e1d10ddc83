"""Mask R-CNN + FPN with VMamba-T on COCO, 3x schedule with multi-scale + crop training.

Paper row: box AP 48.8, mask AP 43.7. Same model and optimizer as the 1x config; 36 epochs with LR steps
after epochs 27 and 33, and the DETR-style augmentation of the official 3x configs: each image is either
resized so its short side is one of 480, 512, ..., 800 (long side <= 1333), or resized to a short side of
400/500/600, randomly cropped to 384-600 px, then resized as in the first branch.
"""
_base_ = ['./maskrcnn_vmamba_tiny_1x.py']

_multi_scale = [(1333, short) for short in range(480, 801, 32)]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoice', transforms=[
        [dict(type='RandomChoiceResize', scales=_multi_scale, keep_ratio=True)],
        [dict(type='RandomChoiceResize', scales=[(1333, 400), (1333, 500), (1333, 600)], keep_ratio=True),
         dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600), allow_negative_crop=True),
         dict(type='RandomChoiceResize', scales=_multi_scale, keep_ratio=True)],
    ]),
    dict(type='PackDetInputs'),
]
del _multi_scale
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
