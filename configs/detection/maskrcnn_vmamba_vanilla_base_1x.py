"""Mask R-CNN + FPN with Vanilla-VMamba-B (v0) on COCO, 1x.

Paper row: box AP 48.6, mask AP 43.3, 96M parameters. Drop-path 0.2, inherited from Swin-T by the
official v0 det configs. (The official B det run started from the dp-0.5, no-EMA ImageNet weights,
vssmbase_dp05_ckpt_epoch_260.pth; this config names the released dp-0.6 file; override
model.backbone.init_cfg.checkpoint to use the other.)"""
_base_ = ['./maskrcnn_vmamba_tiny_1x.py']
from vmamba.models.variants import backbone_channels, official_checkpoint  # noqa: E402

model = dict(
    backbone=dict(arch='vanilla_base', drop_path_rate=0.2,
                  init_cfg=dict(type='Pretrained', checkpoint=official_checkpoint('vanilla_base'))),
    neck=dict(in_channels=backbone_channels('vanilla_base')))
