"""The ADE20K UperNet configs: the official recipe, the variant wiring and the model sizes.

Reference values are the official VMamba segmentation configs (segmentation/configs/vssm1, vssm) and the
README's parameter counts; the configs themselves read widths and file names from the variant table.
"""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from vmamba.models import ARCH_SETTINGS
from repo_testlib import REPO

CONFIG_DIR = osp.join(REPO, 'configs', 'segmentation')

# config name -> (variant, official drop-path rate, stage widths, published params in M)
CONFIGS = {
    'upernet_vmamba_tiny_160k_ade20k_512x512.py': ('tiny_s1l8', 0.2, [96, 192, 384, 768], 62),
    'upernet_vmamba_small_160k_ade20k_512x512.py': ('small_s2l15', 0.3, [96, 192, 384, 768], 82),
    'upernet_vmamba_base_160k_ade20k_512x512.py': ('base_s2l15', 0.6, [128, 256, 512, 1024], 122),
    'upernet_vmamba_vanilla_tiny_160k_ade20k_512x512.py': ('vanilla_tiny', 0.3, [96, 192, 384, 768], 55),
    'upernet_vmamba_vanilla_small_160k_ade20k_512x512.py': ('vanilla_small', 0.3, [96, 192, 384, 768], 76),
    'upernet_vmamba_vanilla_base_160k_ade20k_512x512.py': ('vanilla_base', 0.3, [128, 256, 512, 1024], 110),
}
TINY = 'upernet_vmamba_tiny_160k_ade20k_512x512.py'


def load(name):
    return Config.fromfile(osp.join(CONFIG_DIR, name))


def build_model(cfg):
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    return MODELS.build(cfg.model)


@pytest.fixture(scope='module')
def tiny_model():
    torch.manual_seed(0)
    return build_model(load(TINY))


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_variant_wiring(name):
    arch, drop_path, widths, _ = CONFIGS[name]
    cfg = load(name)
    backbone = cfg.model.backbone
    assert backbone.type == 'VMamba'
    assert set(backbone) == {'type', 'arch', 'out_indices', 'drop_path_rate', 'frozen_stages', 'with_cp',
                             'init_cfg'}, 'no key of the base ResNet may leak into the backbone'
    from vmamba.models import resolve_arch
    assert resolve_arch(backbone.arch)[0] == arch
    assert backbone.drop_path_rate == drop_path
    assert tuple(backbone.out_indices) == (0, 1, 2, 3)
    assert backbone.init_cfg == dict(type='Pretrained',
                                     checkpoint=osp.join('checkpoints', ARCH_SETTINGS[arch]['checkpoint']))
    assert cfg.model.decode_head.in_channels == widths
    assert cfg.model.auxiliary_head.in_channels == widths[2]


def test_official_recipe():
    cfg = load(TINY)
    assert cfg.default_scope == 'mmseg'
    assert cfg.model.type == 'EncoderDecoder' and cfg.model.pretrained is None
    head, aux = cfg.model.decode_head, cfg.model.auxiliary_head
    assert (head.type, head.channels, tuple(head.pool_scales), head.num_classes) == ('UPerHead', 512, (1, 2, 3, 6), 150)
    assert head.norm_cfg.type == 'SyncBN' and head.loss_decode.loss_weight == 1.0
    assert (aux.type, aux.in_index, aux.num_classes, aux.loss_decode.loss_weight) == ('FCNHead', 2, 150, 0.4)
    assert cfg.model.test_cfg.mode == 'whole'

    assert cfg.optim_wrapper.type == 'OptimWrapper'
    assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01)
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys == {'norm': dict(decay_mult=0.)}
    warmup, poly = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.begin, warmup.end, warmup.by_epoch) == \
        ('LinearLR', 1e-6, 0, 1500, False)
    assert (poly.type, poly.power, poly.eta_min, poly.begin, poly.end, poly.by_epoch) == \
        ('PolyLR', 1.0, 0.0, 1500, 160000, False)
    assert (cfg.train_cfg.type, cfg.train_cfg.max_iters) == ('IterBasedTrainLoop', 160000)
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 16

    assert tuple(cfg.crop_size) == (512, 512) and tuple(cfg.model.data_preprocessor.size) == (512, 512)
    crop = next(t for t in cfg.train_pipeline if t.type == 'RandomCrop')
    assert tuple(crop.crop_size) == (512, 512)
    assert cfg.train_dataloader.dataset.type == 'ADE20KDataset'
    assert cfg.val_evaluator.type == 'IoUMetric' and cfg.test_evaluator.type == 'IoUMetric'
    # Multi-scale + flip evaluation (--tta): ratios 0.5..1.75, each with and without a flip.
    assert cfg.tta_model.type == 'SegTTAModel'
    tta = cfg.tta_pipeline[1]
    assert [t.scale_factor for t in tta.transforms[0]] == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    assert sorted(t.prob for t in tta.transforms[1]) == [0.0, 1.0]


def test_tiny_parameter_count(tiny_model):
    """Official backbone (29,481,408) + mmseg's UperNet and FCN heads = the paper's 62M, exactly."""
    total = sum(p.numel() for p in tiny_model.parameters())
    backbone = sum(p.numel() for p in tiny_model.backbone.parameters())
    assert backbone == 29_481_408
    assert total == 61_902_572


@pytest.mark.parametrize('name', sorted(set(CONFIGS) - {TINY}))
def test_parameter_counts_match_published(name):
    cfg = load(name)
    cfg.model.backbone.init_cfg = None
    model = build_model(cfg)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6) == CONFIGS[name][3]
    assert model.backbone.num_features == CONFIGS[name][2]


def test_no_weight_decay_on_norms(tiny_model):
    from mmengine.optim import build_optim_wrapper
    cfg = load(TINY)
    wrapper = build_optim_wrapper(tiny_model, cfg.optim_wrapper)
    decay = {}
    names = {id(p): n for n, p in tiny_model.named_parameters()}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            decay[names[id(p)]] = group['weight_decay']
    assert len(decay) == len(names)
    for name in ('backbone.layers.0.blocks.0.norm.weight', 'backbone.layers.2.blocks.3.norm2.bias',
                 'backbone.layers.1.blocks.0.op.out_norm.weight', 'backbone.outnorm3.weight'):
        assert decay[name] == 0.0, name
    for name in ('backbone.layers.0.blocks.0.op.in_proj.weight', 'backbone.layers.3.blocks.1.mlp.fc1.weight',
                 'decode_head.fpn_bottleneck.conv.weight', 'auxiliary_head.conv_seg.weight'):
        assert decay[name] == pytest.approx(0.01), name


def test_syncbn_heads_run_on_one_cpu_process(tiny_model):
    """The heads are built with SyncBN; without a process group they must train as plain BN on CPU."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    assert not torch.distributed.is_initialized()
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in tiny_model.decode_head.modules())
    tiny_model.train()
    samples = []
    for _ in range(2):
        sample = SegDataSample(gt_sem_seg=PixelData(data=torch.randint(0, 150, (1, 64, 64))))
        sample.set_metainfo(dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64)))
        samples.append(sample)
    bn = next(m for m in tiny_model.decode_head.modules() if isinstance(m, torch.nn.SyncBatchNorm))
    before = bn.running_mean.clone()
    losses = tiny_model(torch.randn(2, 3, 64, 64), samples, mode='loss')
    total = losses['decode.loss_ce'] + losses['aux.loss_ce']
    assert torch.isfinite(total)
    total.backward()
    assert not torch.equal(before, bn.running_mean), 'BN statistics must update as in local BatchNorm'
    assert tiny_model.backbone.layers[0].blocks[0].op.in_proj.weight.grad is not None


def test_official_checkpoint_initialises_the_backbone(tmp_path):
    """An official-layout classification file (``{'model': ..., 'config': ...}``) given on the command
    line initialises the segmentor's backbone through the Runner's ``init_weights``; heads are untouched."""
    from vmamba.models import VSSM
    torch.manual_seed(1)
    classifier = VSSM(arch='tiny')
    path = tmp_path / 'official_tiny.pth'
    torch.save({'model': classifier.state_dict(), 'epoch': 263, 'config': 'yacs config'}, path)
    cfg = load(TINY)
    cfg.merge_from_dict({'model.backbone.init_cfg.checkpoint': str(path)})
    model = build_model(cfg)
    model.init_weights()
    backbone = model.backbone.state_dict()
    for key, value in classifier.state_dict().items():
        if not key.startswith('classifier.'):
            assert torch.equal(backbone[key], value), key
    assert torch.equal(backbone['outnorm2.weight'], torch.ones(384))  # no counterpart in the file


def test_pretrained_override_from_command_line():
    """The checkpoint path is one --cfg-options key away; a wrong path fails loudly at init."""
    cfg = load(TINY)
    cfg.merge_from_dict({'model.backbone.init_cfg.checkpoint': '/nonexistent/vmamba.pth'})
    assert cfg.model.backbone.init_cfg.checkpoint == '/nonexistent/vmamba.pth'
    model = build_model(cfg)
    with pytest.raises(FileNotFoundError, match='model.backbone.init_cfg.checkpoint'):
        model.init_weights()
