# UperNet + VMamba-T (tiny = tiny_s1l8) on ADE20K (512x512, 160k iterations).
# Published (official repo, README): 47.9 mIoU single-scale, 48.8 multi-scale + flip;
#   62M params, 949 GFLOPs at 512x2048.
#
# The recipe is the official one (MzeroMiko/VMamba segmentation/configs/vssm1), which is mmseg's Swin UperNet
# recipe: AdamW lr 6e-5, wd 0.01, no decay on parameters named `norm`, 1500 linear warm-up iterations, then
# poly decay; 2 images per GPU x 8 GPUs. It is written here over mmseg's own bases only, so it also runs with
# mmseg's unmodified tools/train.py (with this repository on PYTHONPATH).
#
# Stage widths and the ImageNet checkpoint file name come from the variant table (vmamba/models/variants.py)
# through two helpers, never re-typed: the other configs change the arch name and the drop-path rate.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
from vmamba.models.variants import backbone_channels, official_checkpoint  # noqa: E402 (not kept in the config)

custom_imports = dict(imports=['vmamba.models'], allow_failed_imports=False)

__arch = 'tiny'  # = tiny_s1l8. (mmengine drops names starting with `__` once the file is read.)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True,  # drop every ResNet key of the base, so none can leak into VMamba
        type='VMamba',
        arch=__arch,
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,  # as the official tiny segmentation config
        frozen_stages=-1,
        with_cp=False,
        # The official ImageNet release file; download it into checkpoints/ (see docs/segmentation.md),
        # or override: --cfg-options model.backbone.init_cfg.checkpoint=PATH
        init_cfg=dict(type='Pretrained', checkpoint=official_checkpoint(__arch))),
    # From the base: UPerHead (channels 512, pool scales 1/2/3/6) and an FCNHead on stage 2 (loss weight
    # 0.4), both with SyncBN (plain BN on a single process: mmengine's Runner reverts it).
    decode_head=dict(in_channels=backbone_channels(__arch), num_classes=150),
    auxiliary_head=dict(in_channels=backbone_channels(__arch)[2], num_classes=150))

# AdamW; the only official no-decay key that matches VMamba parameters is `norm` (block norms, SS2D
# out_norm, output norms). The stem/downsampling LayerNorms (`patch_embed.2/7`, `downsample.3`), A_logs, Ds
# and the heads' BatchNorms keep wd 0.01, as in the official runs.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]

# 8 GPUs x 2 images = batch 16. --auto-scale-lr rescales lr for another total batch size.
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
auto_scale_lr = dict(enable=False, base_batch_size=16)
