"""The detection configs: the official recipe, no keys leaking into the backbone, channels and checkpoint
names derived from the variant table, and the full-model parameter counts."""
import inspect
import os.path as osp

import pytest
from mmengine.config import Config

from vmamba.models import VMamba, resolve_arch
from repo_testlib import REPO

CONFIGS = osp.join(REPO, 'configs', 'detection')

# (config stem, arch, drop-path of the official det config)
PAPER = [
    ('maskrcnn_vmamba_tiny_1x', 'tiny', 0.2),
    ('maskrcnn_vmamba_small_1x', 'small', 0.2),
    ('maskrcnn_vmamba_base_1x', 'base', 0.6),
    ('maskrcnn_vmamba_tiny_3x', 'tiny', 0.2),
    ('maskrcnn_vmamba_small_3x', 'small', 0.2),
    ('maskrcnn_vmamba_base_3x', 'base', 0.6),
    ('maskrcnn_vmamba_vanilla_tiny_1x', 'vanilla_tiny', 0.2),
    ('maskrcnn_vmamba_vanilla_small_1x', 'vanilla_small', 0.2),
    ('maskrcnn_vmamba_vanilla_base_1x', 'vanilla_base', 0.2),
]


def load(stem):
    return Config.fromfile(osp.join(CONFIGS, stem + '.py'))


@pytest.mark.parametrize('stem,arch,drop_path', PAPER)
def test_paper_recipe(stem, arch, drop_path):
    cfg = load(stem)
    assert cfg.default_scope == 'mmdet'
    assert cfg.custom_imports == dict(imports=['vmamba.models'], allow_failed_imports=False)
    assert cfg.model.type == 'MaskRCNN'

    backbone = cfg.model.backbone
    accepted = set(inspect.signature(VMamba.__init__).parameters) - {'self'}
    assert set(backbone) - {'type'} <= accepted, 'a key the backbone does not take leaked in'
    assert backbone.type == 'VMamba' and backbone.arch == arch
    assert backbone.drop_path_rate == drop_path and backbone.out_indices == (0, 1, 2, 3)
    settings = resolve_arch(arch)[1]
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=f'checkpoints/{settings["checkpoint"]}')
    assert cfg.model.neck.in_channels == [settings['dims'] * 2**i for i in range(4)]
    assert cfg.model.roi_head.bbox_head.num_classes == cfg.model.roi_head.mask_head.num_classes == 80

    assert cfg.optim_wrapper.type == 'OptimWrapper'
    assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05)
    assert cfg.optim_wrapper.paramwise_cfg == dict(custom_keys={'norm': dict(decay_mult=0.)})
    warmup, steps = cfg.param_scheduler
    assert warmup == dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000)
    epochs, milestones = (36, [27, 33]) if stem.endswith('3x') else (12, [8, 11])
    assert cfg.train_cfg.max_epochs == epochs
    assert steps.type == 'MultiStepLR' and steps.milestones == milestones and steps.gamma == 0.1
    assert steps.end == epochs and steps.by_epoch
    assert cfg.train_dataloader.batch_size == 2 and cfg.auto_scale_lr.base_batch_size == 16

    data = cfg.train_dataloader.dataset
    assert data.data_root == 'data/coco/' and data.ann_file == 'annotations/instances_train2017.json'
    assert cfg.val_evaluator.type == 'CocoMetric' and cfg.val_evaluator.metric == ['bbox', 'segm']
    kinds = [t['type'] for t in data.pipeline]
    if stem.endswith('3x'):
        assert kinds == ['LoadImageFromFile', 'LoadAnnotations', 'RandomFlip', 'RandomChoice', 'PackDetInputs']
        resize, crop_branch = data.pipeline[3].transforms
        shorts = sorted(min(s) for s in resize[0].scales)
        assert shorts == list(range(480, 801, 32)) and max(max(s) for s in resize[0].scales) == 1333
        assert [t['type'] for t in crop_branch] == ['RandomChoiceResize', 'RandomCrop', 'RandomChoiceResize']
        assert crop_branch[1].crop_size == (384, 600) and crop_branch[1].crop_type == 'absolute_range'
    else:
        assert kinds == ['LoadImageFromFile', 'LoadAnnotations', 'Resize', 'RandomFlip', 'PackDetInputs']
        assert data.pipeline[2].scale == (1333, 800)


def test_checkpoint_path_overridable_from_command_line():
    cfg = load('maskrcnn_vmamba_tiny_1x')
    cfg.merge_from_dict({'model.backbone.init_cfg.checkpoint': '/elsewhere/x.pth'})
    assert cfg.model.backbone.init_cfg == dict(type='Pretrained', checkpoint='/elsewhere/x.pth')


def build(cfg):
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    cfg.model.backbone.init_cfg = None
    return MODELS.build(cfg.model)


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize('stem,total,backbone', [
    # tiny: 49.76 M in all; the official backbone with its four output norms is 29,481,408.
    ('maskrcnn_vmamba_tiny_1x', 49_755_312, 29_481_408),
    # small: the official analyze/flops.py reports 69.654M for vssm1/mask_rcnn_vssm_fpn_coco_small.py.
    ('maskrcnn_vmamba_small_1x', 69_654_000, 49_380_096),
])
def test_full_model_parameter_count(stem, total, backbone):
    model = build(load(stem))
    assert count(model.backbone) == backbone
    assert count(model) == total


def test_demo_config_differs_only_in_data_size_schedule_and_classes():
    real, demo = load('maskrcnn_vmamba_tiny_1x'), load('maskrcnn_vmamba_tiny_demo')
    from vmamba.demo.coco import CLASSES
    from vmamba.demo import DEMO_ARCH
    from vmamba.models.variants import backbone_channels
    # the backbone's width/depth (the demos' custom arch), drop path and init differ; the rest is the 1x config's
    assert demo.model.backbone == dict(real.model.backbone, arch=DEMO_ARCH, drop_path_rate=0.0, init_cfg=None)
    assert demo.model.neck == dict(real.model.neck, in_channels=backbone_channels(DEMO_ARCH))
    assert demo.model.rpn_head == real.model.rpn_head
    assert demo.model.roi_head.bbox_head.num_classes == demo.model.roi_head.mask_head.num_classes == len(CLASSES)
    assert demo.optim_wrapper.optimizer.type == 'AdamW' and demo.optim_wrapper.paramwise_cfg == \
        real.optim_wrapper.paramwise_cfg
    assert demo.train_dataloader.dataset.type == 'DemoCocoDataset'
    assert demo.val_evaluator.type == 'CocoMetric' and demo.val_evaluator.metric == ['bbox', 'segm']
    assert 'vmamba.demo.datasets.detection' in demo.custom_imports.imports
