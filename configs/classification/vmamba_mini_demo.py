# A CPU-sized demo of the classification pipeline: the VMamba-T config (same classifier, loss, optimizer,
# weight-decay rule, EMA, evaluation), scaled down to train in a few minutes on a laptop CPU:
#   * data: the synthetic ImageNet-layout set of vmamba/demo/imagenet.py (6 shape classes, 64x64 images,
#     64 training + 16 validation images per class), written to data/demo_imagenet on first use;
#   * model: a "mini" VMamba of the final (tiny_s1l8) design, 32 channels, one or two blocks per stage
#     (~1.5M parameters instead of 30M), from scratch;
#   * augmentation: random resized crop + flip only (RandAugment, random erasing, Mixup/CutMix need far
#     more than a few hundred iterations to pay off);
#   * schedule: 15 epochs of 12 iterations (batch 32), 1 warm-up epoch, EMA over ~100 iterations.
# It reaches a validation top-1 of 72.9% with the EMA weights and 81.3% with the raw ones (6 classes: chance
# is 16.7%), in about 8 CPU-minutes (see docs/classification.md).
#
#   python tools/train.py configs/classification/vmamba_mini_demo.py
#   python tools/test.py configs/classification/vmamba_mini_demo.py work_dirs/vmamba_mini_demo/epoch_15.pth
_base_ = ['./vmamba_tiny_in1k.py']

num_classes = 6
image_size = 64
max_epochs = 15

# A custom arch: the final design's defaults (d_state 1, ssm_ratio 1, MLP 4x, conv stem) at a smaller size,
# the demos' one (defined once, in vmamba/demo/__init__.py).
from vmamba.demo import DEMO_ARCH as __mini_arch  # noqa: E402  (names starting with __ stay out of the config)
custom_imports = dict(imports=['vmamba.models', 'vmamba.tasks.classification', 'vmamba.demo.datasets.classification',
                               'vmamba.demo.hooks'], allow_failed_imports=False)
model = dict(
    data_preprocessor=dict(num_classes=num_classes),
    backbone=dict(arch=dict(__mini_arch, _delete_=True), drop_path_rate=0.0),  # (_delete_: replaces a name)
    head=dict(num_classes=num_classes, in_channels=__mini_arch['dims'] * 2**3),
    train_cfg=None)  # no Mixup/CutMix

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=image_size, crop_ratio_range=(0.5, 1.0), backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [  # the recipe's resize-then-centre-crop, at the same 256:224 ratio
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=image_size * 256 // 224, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=image_size),
    dict(type='PackInputs'),
]
__demo_cfg = dict(num_classes=num_classes, train_per_class=64, val_per_class=16, size=image_size, seed=0)
train_dataloader = dict(
    batch_size=32, num_workers=0, persistent_workers=False, pin_memory=False,
    dataset=dict(type='DemoImageNet', data_root='data/demo_imagenet', demo_cfg=__demo_cfg,
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32, num_workers=0, persistent_workers=False, pin_memory=False,
    dataset=dict(type='DemoImageNet', data_root='data/demo_imagenet', demo_cfg=__demo_cfg,
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator

# The recipe's AdamW, weight-decay exclusions and clipping, in fp32 (mixed precision needs a GPU).
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=_base_.optim_wrapper.optimizer,
    clip_grad=_base_.optim_wrapper.clip_grad,
    paramwise_cfg=_base_.optim_wrapper.paramwise_cfg)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min_ratio=1e-2, by_epoch=True, begin=1, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=5)
auto_scale_lr = dict(base_batch_size=32)

default_hooks = dict(
    logger=dict(interval=12),
    checkpoint=dict(interval=5, max_keep_ckpts=1))
custom_hooks = [  # EMA over ~100 iterations instead of 10,000; both weights are evaluated, as in the recipe
    dict(type='VMambaEMAHook', momentum=1e-2, priority='ABOVE_NORMAL'),
    dict(type='DemoVisHook', num_images=16),  # predictions.png (labels on a grid) and curves.png
]
