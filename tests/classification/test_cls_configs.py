"""The ImageNet configs: each builds its variant, with the official recipe and the official parameters."""
import pytest
import torch
from mmengine.registry import init_default_scope

from vmamba.models import ARCH_SETTINGS, VSSM
from vmamba.tasks.classification import official_to_classifier_keys

from cls_testlib import VARIANT_CONFIGS, load_config


@pytest.mark.parametrize('name,variant', sorted(VARIANT_CONFIGS.items()))
def test_config_reads_its_variant_from_the_table(name, variant):
    cfg = load_config(name)
    backbone, head = cfg.model.backbone, cfg.model.head
    assert backbone.type == 'VMamba' and backbone.arch == variant
    assert backbone.out_indices == (3,)  # one output norm: the official classifier.norm
    assert backbone.drop_path_rate == ARCH_SETTINGS[variant]['drop_path_rate']
    assert head.in_channels == ARCH_SETTINGS[variant]['dims'] * 8 and head.num_classes == 1000
    # Released accuracy: EMA weights for all but vanilla-tiny.
    expected = 'raw' if variant == 'vanilla_tiny' else 'ema'
    assert cfg.default_hooks.checkpoint_loader.weights == expected


def test_drop_path_per_variant_is_the_official_one():
    rates = {v: load_config(n).model.backbone.drop_path_rate for n, v in VARIANT_CONFIGS.items()}
    assert rates == {'tiny_s1l8': 0.2, 'tiny_s2l5': 0.2, 'vanilla_tiny': 0.2,
                     'small_s2l15': 0.3, 'small_s1l20': 0.3, 'vanilla_small': 0.3,
                     'base_s2l15': 0.6, 'base_s1l20': 0.5, 'vanilla_base': 0.6}


def test_recipe_is_the_official_one():
    cfg = load_config('vmamba_tiny_in1k.py')
    # Optimizer: AdamW 1e-3 at batch 1024 (8 x 128), wd 0.05, eps 1e-8, clipping at 5, AMP.
    wrapper = cfg.optim_wrapper
    assert wrapper.type == 'AmpOptimWrapper' and wrapper.loss_scale == 'dynamic'
    assert dict(wrapper.optimizer) == dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)
    assert wrapper.clip_grad == dict(max_norm=5.0)
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 1024
    # 300 epochs: 20 linear warm-up epochs from lr/1000, then cosine to 1e-5, per iteration.
    assert cfg.train_cfg.max_epochs == 300
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.begin, warmup.end) == ('LinearLR', 1e-3, 0, 20)
    assert cosine.type == 'CosineAnnealingLR' and cosine.begin == 20 and 'end' not in cosine
    assert cosine.eta_min_ratio * wrapper.optimizer.lr == pytest.approx(1e-5)
    assert warmup.convert_to_iter_based and cosine.convert_to_iter_based
    # Mixup 0.8 / CutMix 1.0 with label smoothing 0.1.
    assert [dict(a) for a in cfg.model.train_cfg.augments] == [dict(type='Mixup', alpha=0.8),
                                                              dict(type='CutMix', alpha=1.0)]
    assert cfg.model.head.loss == dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')
    # EMA 0.9999, evaluating both the EMA and the raw weights.
    from mmpretrain.registry import HOOKS
    (ema_cfg,) = cfg.custom_hooks
    ema = HOOKS.build(ema_cfg)
    assert ema.ema_cfg['momentum'] == pytest.approx(1 - 0.9999) and ema.ema_cfg['type'] == 'ExponentialMovingAverage'
    assert ema.evaluate_on_ema and ema.evaluate_on_origin


def test_augmentation_is_the_official_one():
    cfg = load_config('vmamba_tiny_in1k.py')
    train = {t['type']: t for t in cfg.train_dataloader.dataset.pipeline}
    assert train['RandomResizedCrop']['scale'] == 224 and train['RandomResizedCrop']['interpolation'] == 'bicubic'
    assert train['RandomFlip']['prob'] == 0.5
    randaug = train['RandAugment']  # rand-m9-mstd0.5-inc1
    assert (randaug.policies, randaug.num_policies, randaug.magnitude_level, randaug.magnitude_std) == \
        ('timm_increasing', 2, 9, 0.5)
    assert train['RandomErasing']['erase_prob'] == 0.25 and train['RandomErasing']['mode'] == 'rand'
    assert 'ColorJitter' not in train  # timm skips colour jitter when RandAugment is on
    test = {t['type']: t for t in cfg.val_dataloader.dataset.pipeline}
    assert test['ResizeEdge']['scale'] == 256 and test['ResizeEdge']['edge'] == 'short'
    assert test['CenterCrop']['crop_size'] == 224
    assert cfg.val_evaluator == dict(type='Accuracy', topk=(1, 5))


@pytest.mark.parametrize('name,variant', sorted(VARIANT_CONFIGS.items()))
def test_classifier_has_exactly_the_official_parameters(name, variant, skip_weight_init):
    """Same parameter names (after the key conversion) and shapes as the official model, so same count."""
    import vmamba.tasks.classification  # noqa: F401
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    classifier = MODELS.build(load_config(name).model)
    official = VSSM(arch=variant)
    ours = {k: tuple(v.shape) for k, v in classifier.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in official_to_classifier_keys(official.state_dict()).items()}
    assert ours == theirs
    assert sum(p.numel() for p in classifier.parameters()) == sum(p.numel() for p in official.parameters())
