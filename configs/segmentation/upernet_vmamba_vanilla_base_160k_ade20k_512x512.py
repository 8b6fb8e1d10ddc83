# UperNet + Vanilla-VMamba-B on ADE20K (512x512, 160k iterations):
# the tiny recipe with another backbone.
# Published (official repo, README): 50.0 mIoU single-scale, 51.3 multi-scale + flip;
#   110M params, 1226 GFLOPs at 512x2048.
# The published run started from the dp0.5 non-EMA ImageNet checkpoint (vssmbase_dp05_ckpt_epoch_260.pth);
# the default below is the released dp0.6 file.
_base_ = ['./upernet_vmamba_tiny_160k_ade20k_512x512.py']
from vmamba.models.variants import backbone_channels, official_checkpoint  # noqa: E402

__arch = 'vanilla_base'

model = dict(
    backbone=dict(
        arch=__arch,
        drop_path_rate=0.3,  # the official vanilla segmentation configs set no rate and inherit
        # 0.3 from the Swin UperNet base they extend
        init_cfg=dict(type='Pretrained', checkpoint=official_checkpoint(__arch))),
    decode_head=dict(in_channels=backbone_channels(__arch)),
    auxiliary_head=dict(in_channels=backbone_channels(__arch)[2]))
