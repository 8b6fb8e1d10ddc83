# ImageNet-1K at 224 px, 128 images per GPU, with the official augmentation (timm's create_transform as
# called by the official Swin-derived trainer):
#   RandomResizedCrop 224 (bicubic) -> horizontal flip 0.5 -> RandAugment rand-m9-mstd0.5-inc1 ->
#   normalise -> RandomErasing p=0.25, 'pixel' mode (per-pixel Gaussian noise), one region.
# Colour jitter: the official config sets COLOR_JITTER=0.4, but timm applies colour jitter only when no
# auto-augment policy is given; with RandAugment on it is skipped, so it is left out here as well.
# Test: resize the short side to 256 (bicubic), centre-crop 224.
# Data layout (class folders, as torchvision's ImageFolder and the official trainer read it):
#   data/imagenet/train/n01440764/*.JPEG ...   data/imagenet/val/n01440764/*.JPEG ...
dataset_type = 'ImageNet'
data_root = 'data/imagenet'
bgr_mean = [103.53, 116.28, 123.675]  # the preprocessor's mean/std in the BGR order of decoded images
bgr_std = [57.375, 57.12, 58.395]

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',  # the 'inc1' op set
        num_policies=2,  # timm's default n=2 ops per image
        total_level=10,
        magnitude_level=9,  # m9
        magnitude_std=0.5,  # mstd0.5
        hparams=dict(pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    dict(
        type='RandomErasing',
        erase_prob=0.25,
        mode='rand',  # per-pixel N(mean, std) before normalisation = N(0, 1) after, timm's 'pixel' mode
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=bgr_mean,
        fill_std=bgr_std),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=128,  # per GPU; x 8 GPUs = 1024
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    collate_fn=dict(type='default_collate'),
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, split='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    collate_fn=dict(type='default_collate'),
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, split='val', pipeline=test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
