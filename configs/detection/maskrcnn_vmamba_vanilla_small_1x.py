"""Mask R-CNN + FPN with Vanilla-VMamba-S (v0) on COCO, 1x.

Paper row: box AP 48.2, mask AP 43.0, 64M parameters. Drop-path 0.2, inherited from Swin-T by the
official v0 det configs."""
_base_ = ['./maskrcnn_vmamba_tiny_1x.py']
from vmamba.models.variants import backbone_channels, official_checkpoint  # noqa: E402

model = dict(
    backbone=dict(arch='vanilla_small', drop_path_rate=0.2,
                  init_cfg=dict(type='Pretrained', checkpoint=official_checkpoint('vanilla_small'))),
    neck=dict(in_channels=backbone_channels('vanilla_small')))
