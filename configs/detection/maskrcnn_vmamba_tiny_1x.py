"""Mask R-CNN + FPN with VMamba-T (tiny = tiny_s1l8) on COCO, 1x schedule: the paper's recipe.

Paper row (COCO val2017): box AP 47.3, mask AP 42.7, 50M parameters, 271 GFLOPs at 1280x800.
Recipe (the official det configs): AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05 except on
parameters whose name contains "norm"; linear warm-up over 1000 iterations from 0.001x; 12 epochs with the
LR divided by 10 after epochs 8 and 11; 1333x800 single-scale training with flips; 2 images per GPU on
8 GPUs (total batch 16, `auto_scale_lr.base_batch_size`).

Everything else (the detector, the COCO pipeline and evaluation, the runtime) comes from mmdet's own
base configs, so this file also runs with mmdet's tools/train.py. Run from the directory that holds
data/coco/ and checkpoints/ (or override the paths with --cfg-options):

    python tools/train.py configs/detection/maskrcnn_vmamba_tiny_1x.py           # 1 process
    tools/dist_train.sh configs/detection/maskrcnn_vmamba_tiny_1x.py 8            # 8 GPUs, the recipe
"""
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
# Functions imported here are dropped from the config after it is read; only their results stay.
from vmamba.models.variants import backbone_channels, official_checkpoint  # noqa: E402

custom_imports = dict(imports=['vmamba.models'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,  # nothing of the ResNet-50 backbone dict survives
        type='VMamba',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,  # as the official det config (the ImageNet run used 0.2 too)
        frozen_stages=-1,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=official_checkpoint('tiny'))),
    neck=dict(in_channels=backbone_channels('tiny')))

train_dataloader = dict(batch_size=2)  # per GPU; x 8 GPUs = 16

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11], gamma=0.1),
]

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    # Substring match on parameter names, as the official configs: every LayerNorm named *norm*
    # (block norms, SS2D out_norm, the four output norms) gets no weight decay.
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))

auto_scale_lr = dict(enable=False, base_batch_size=16)
