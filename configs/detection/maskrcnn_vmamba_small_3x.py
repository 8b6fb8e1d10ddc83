"""Mask R-CNN + FPN with VMamba-S (small_s2l15) on COCO, 3x multi-scale + crop: the tiny 3x recipe.

Paper row: box AP 49.9, mask AP 44.2. Drop-path 0.2 as the official det config."""
_base_ = ['./maskrcnn_vmamba_tiny_3x.py']
from vmamba.models.variants import backbone_channels, official_checkpoint  # noqa: E402

model = dict(
    backbone=dict(arch='small', drop_path_rate=0.2,
                  init_cfg=dict(type='Pretrained', checkpoint=official_checkpoint('small'))),
    neck=dict(in_channels=backbone_channels('small')))
