# The VMamba ImageNet classifier as an mmpretrain ImageClassifier, parameter for parameter the official one:
#   backbone (stem + 4 stages) -> outnorm3 (= official classifier.norm) -> global average pool -> Linear
#   (head.fc = official classifier.head).
# Official checkpoints load into it through VMambaCheckpointHook (see default_runtime.py). The variant
# configs set backbone.arch, backbone.drop_path_rate and head.in_channels from vmamba.models.variants.
custom_imports = dict(imports=['vmamba.models', 'vmamba.tasks.classification'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(
        num_classes=1000,  # one-hot width for Mixup/CutMix
        mean=[123.675, 116.28, 103.53],  # timm's IMAGENET_DEFAULT_MEAN/STD x 255, RGB
        std=[58.395, 57.12, 57.375],
        to_rgb=True),  # images are decoded as BGR
    backbone=dict(type='VMamba', out_indices=(3,)),  # one output: the last stage through outnorm3
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        # timm's Mixup smooths the mixed one-hot targets (0.1) and trains with soft-target cross-entropy;
        # LabelSmoothLoss 'original' on mmpretrain's mixed targets is the same loss.
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False,
        # The official init of every Linear: trunc-normal std 0.02, zero bias (the backbone does its own).
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.)),
    # timm Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode='batch'): each batch is
    # either mixed up or cut-mixed, with equal odds.
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)
