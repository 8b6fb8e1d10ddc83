"""Mask R-CNN + FPN with VMamba-B (base = base_s2l15) on COCO, 1x: the tiny recipe with the base backbone.

Paper row: box AP 49.2, mask AP 44.1, 108M parameters. Drop-path 0.6 as the official det config (and its
ImageNet run)."""
_base_ = ['./maskrcnn_vmamba_tiny_1x.py']
from vmamba.models.variants import backbone_channels, official_checkpoint  # noqa: E402

model = dict(
    backbone=dict(arch='base', drop_path_rate=0.6,
                  init_cfg=dict(type='Pretrained', checkpoint=official_checkpoint('base'))),
    neck=dict(in_channels=backbone_channels('base')))
