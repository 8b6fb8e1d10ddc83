# UperNet + VMamba-S (small = small_s2l15) on ADE20K (512x512, 160k iterations):
# the tiny recipe with another backbone.
# Published (official repo, README): 50.6 mIoU single-scale, 51.2 multi-scale + flip;
#   82M params, 1028 GFLOPs at 512x2048.
_base_ = ['./upernet_vmamba_tiny_160k_ade20k_512x512.py']
from vmamba.models.variants import backbone_channels, official_checkpoint  # noqa: E402

__arch = 'small'  # = small_s2l15

model = dict(
    backbone=dict(
        arch=__arch,
        drop_path_rate=0.3,  # as the official small segmentation config
        init_cfg=dict(type='Pretrained', checkpoint=official_checkpoint(__arch))),
    decode_head=dict(in_channels=backbone_channels(__arch)),
    auxiliary_head=dict(in_channels=backbone_channels(__arch)[2]))
