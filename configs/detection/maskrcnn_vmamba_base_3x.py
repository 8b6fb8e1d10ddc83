"""Mask R-CNN + FPN with VMamba-B (base_s2l15) on COCO, 3x multi-scale + crop: the tiny 3x recipe.

No paper row (the paper reports B at 1x only). Drop-path 0.6 as the official 1x det config."""
_base_ = ['./maskrcnn_vmamba_tiny_3x.py']
from vmamba.models.variants import backbone_channels, official_checkpoint  # noqa: E402

model = dict(
    backbone=dict(arch='base', drop_path_rate=0.6,
                  init_cfg=dict(type='Pretrained', checkpoint=official_checkpoint('base'))),
    neck=dict(in_channels=backbone_channels('base')))
