# Step 1 of the detection demo (tools/demo.py): "ImageNet pretraining" at toy scale. The classification
# pipeline of vmamba_mini_demo.py (same ImageClassifier, loss, AdamW recipe) with the demos' backbone
# (vmamba.demo.DEMO_ARCH) on single shapes drawn like the detection set's (vmamba/demo/shapes_cls.py: the
# 4 detection classes, random colours, 64x64, written to data/demo_shapes_cls on first use). Step 2,
# configs/detection/maskrcnn_vmamba_tiny_demo.py, starts its backbone from this run's last checkpoint
# through init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.').
#
#   python tools/train.py configs/classification/vmamba_shapes_pretrain_demo.py
_base_ = ['./vmamba_mini_demo.py']
from vmamba.demo import DEMO_ARCH as __arch  # noqa: E402  (names starting with __ stay out of the config)
from vmamba.demo import shapes_cls as __shapes  # noqa: E402

custom_imports = dict(imports=['vmamba.models', 'vmamba.tasks.classification', 'vmamba.demo.datasets.classification',
                               'vmamba.demo.hooks'], allow_failed_imports=False)
num_classes = len(__shapes.class_folders())
image_size = 64
max_epochs = 4

model = dict(
    data_preprocessor=dict(num_classes=num_classes),
    backbone=dict(arch=dict(__arch, _delete_=True), drop_path_rate=0.0),
    head=dict(num_classes=num_classes, in_channels=__arch['dims'] * 2**3,
              loss=dict(_delete_=True, type='CrossEntropyLoss')))

train_pipeline = [  # shapes keep their size: the detection set's scale is what the features should fit
    dict(type='LoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
__demo_cfg = dict(train_per_class=160, val_per_class=16, image_size=image_size, seed=0)
__dataset = dict(_delete_=True, type='DemoShapesImageNet', data_root='data/demo_shapes_cls', demo_cfg=__demo_cfg)
train_dataloader = dict(batch_size=32, dataset=dict(__dataset, split='train', pipeline=train_pipeline))
val_dataloader = dict(batch_size=64, dataset=dict(__dataset, split='val', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1,))
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=2e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=False, begin=0, end=10),
    dict(type='CosineAnnealingLR', eta_min_ratio=1e-2, by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
custom_hooks = [dict(type='DemoVisHook', num_images=16)]  # no EMA: 80 iterations are too few to average over
randomness = dict(seed=0)
