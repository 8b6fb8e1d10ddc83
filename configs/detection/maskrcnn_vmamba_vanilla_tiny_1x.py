"""Mask R-CNN + FPN with Vanilla-VMamba-T (the paper's first design, v0) on COCO, 1x.

Paper row: box AP 46.5, mask AP 42.1, 42M parameters. The official v0 det configs set no drop-path and
inherit 0.2 from the Swin-T Mask R-CNN config; so does this one."""
_base_ = ['./maskrcnn_vmamba_tiny_1x.py']
from vmamba.models.variants import backbone_channels, official_checkpoint  # noqa: E402

model = dict(
    backbone=dict(arch='vanilla_tiny', drop_path_rate=0.2,
                  init_cfg=dict(type='Pretrained', checkpoint=official_checkpoint('vanilla_tiny'))),
    neck=dict(in_channels=backbone_channels('vanilla_tiny')))
