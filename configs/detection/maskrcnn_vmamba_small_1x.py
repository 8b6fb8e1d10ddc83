"""Mask R-CNN + FPN with VMamba-S (small = small_s2l15) on COCO, 1x: the tiny recipe with the small backbone.

Paper row: box AP 48.7, mask AP 43.7, 70M parameters. Drop-path 0.2 as the official det config (its
ImageNet run used 0.3)."""
_base_ = ['./maskrcnn_vmamba_tiny_1x.py']
from vmamba.models.variants import backbone_channels, official_checkpoint  # noqa: E402

model = dict(
    backbone=dict(arch='small', drop_path_rate=0.2,
                  init_cfg=dict(type='Pretrained', checkpoint=official_checkpoint('small'))),
    neck=dict(in_channels=backbone_channels('small')))
