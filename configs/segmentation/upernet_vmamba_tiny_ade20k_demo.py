# A CPU-sized demo of the segmentation pipeline: the real UperNet + VMamba-T config, trained from scratch
# on the synthetic ADE20K-layout street scenes of vmamba/demo/ade20k.py (5 classes, 96x128 images,
# 64x64 crops). The set is written to data/demo_ade20k on first use.
#
#   python tools/train.py configs/segmentation/upernet_vmamba_tiny_ade20k_demo.py
#   python tools/test.py configs/segmentation/upernet_vmamba_tiny_ade20k_demo.py \
#       work_dirs/upernet_vmamba_tiny_ade20k_demo/iter_200.pth [--tta]
#
# Everything not overridden here (backbone, heads, data pipeline structure, optimizer type, no-decay
# keys, evaluation) is the tiny config's.
_base_ = ['./upernet_vmamba_tiny_160k_ade20k_512x512.py']
from vmamba.demo import ade20k  # noqa: E402  (modules never enter the config)

custom_imports = dict(imports=['vmamba.models', 'vmamba.demo.datasets.segmentation', 'vmamba.demo.hooks'],
                      allow_failed_imports=False)

__classes = ade20k.DEMO_CLASSES  # an ADE20K subset: mmseg maps the stored ADE ids onto 0..4
data_root = 'data/demo_ade20k'
demo_data = dict(num_train=64, num_val=16, size=(96, 128), seed=0)  # written on first use if missing
image_scale = demo_data['size'][::-1]  # mmseg scales are (W, H)
crop_size = (64, 64)
max_iters = 200

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=None, drop_path_rate=0.1),  # from scratch; a short run needs little drop-path
    # Narrower heads (512 -> 128 channels) keep a CPU iteration around a second.
    decode_head=dict(channels=128, num_classes=len(__classes)),
    auxiliary_head=dict(channels=64, num_classes=len(__classes)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=image_scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
__dataset = dict(type='DemoADE20KDataset', data_root=data_root, demo_cfg=demo_data,
                 metainfo=dict(classes=__classes))
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(__dataset, data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(__dataset,
                 data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader

# The tiny recipe's optimizer at a from-scratch learning rate, with a short warm-up and poly decay.
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=30, end=max_iters, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters // 4)  # 4 points on the curve
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
custom_hooks = [dict(type='DemoVisHook', num_images=6)]  # predictions.png (label maps) and curves.png
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)
