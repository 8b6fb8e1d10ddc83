"""The VMamba models against the official architecture: sizes, keys, shapes, checkpoints, registry."""
import importlib
import math
import pickle

import pytest
import torch

from vmamba.models import (ARCH_ALIASES, ARCH_SETTINGS, CheckpointMismatchError, VMamba, VSSM, guess_arch,
                           load_checkpoint_file, load_official_weights, resolve_arch)
from vmamba.ops import cross_merge_ref, cross_scan_ref, selective_scan_ref

from checkpoint_testlib import official_file

# Parameter counts of the official models with their 1000-class head (MzeroMiko/VMamba).
OFFICIAL_PARAMS = {
    'vanilla_tiny': 22_893_448, 'vanilla_small': 44_417_416, 'vanilla_base': 76_254_056,
    'tiny_s2l5': 30_705_832, 'small_s2l15': 50_147_752, 'base_s2l15': 88_557_800,
    'tiny_s1l8': 30_249_064, 'small_s1l20': 49_012_840, 'base_s1l20': 86_614_504,
}


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_table_covers_the_published_variants():
    assert set(ARCH_SETTINGS) == set(OFFICIAL_PARAMS)
    assert ARCH_ALIASES == {'tiny': 'tiny_s1l8', 'small': 'small_s2l15', 'base': 'base_s2l15'}


@pytest.mark.parametrize('arch', sorted(OFFICIAL_PARAMS))
def test_parameter_count_and_keys_match_official(arch):
    model = VSSM(arch=arch)
    assert n_params(model) == OFFICIAL_PARAMS[arch]
    s = ARCH_SETTINGS[arch]
    sd = model.state_dict()
    for i, depth in enumerate(s['depths']):
        C = s['dims'] * 2 ** i
        Di, N, R = int(s['ssm_ratio'] * C), s['d_state'], math.ceil(C / 16)
        p = f'layers.{i}.blocks.{depth - 1}.op.'
        assert sd[p + 'x_proj_weight'].shape == (4, R + 2 * N, Di)
        assert sd[p + 'dt_projs_weight'].shape == (4, Di, R)
        assert sd[p + 'dt_projs_bias'].shape == (4, Di)
        assert sd[p + 'A_logs'].shape == (4 * Di, N)
        assert sd[p + 'Ds'].shape == (4 * Di,)
        assert sd[p + 'in_proj.weight'].shape == ((2 if s['gated'] else 1) * Di, C)
        assert (p + 'conv2d.bias' in sd) == s['conv_bias']
        assert (f'layers.{i}.blocks.0.mlp.fc1.weight' in sd) == (s['mlp_ratio'] > 0)
    stem = ['patch_embed.0', 'patch_embed.2'] + (['patch_embed.5', 'patch_embed.7'] if s['stem'] == 'conv' else [])
    assert sorted({k.rsplit('.', 1)[0] for k in sd if k.startswith('patch_embed')}) == stem
    down = {'conv': ['layers.0.downsample.1', 'layers.0.downsample.3'],
            'merge': ['layers.0.downsample.norm', 'layers.0.downsample.reduction']}[s['downsample']]
    assert sorted({k.rsplit('.', 1)[0] for k in sd if k.startswith('layers.0.downsample')}) == down
    assert sd['classifier.head.weight'].shape == (1000, s['dims'] * 8)
    assert guess_arch(sd) == arch


def test_backbone_size_matches_official_detection_backbone():
    assert n_params(VMamba(arch='tiny')) == 29_481_408


def test_mamba_initialisation():
    op = VSSM(arch='vanilla_tiny').layers[0].blocks[0].op
    assert torch.equal(op.A_logs[5], torch.log(torch.arange(1, 17, dtype=torch.float32)))
    assert torch.equal(op.Ds, torch.ones_like(op.Ds))
    dt = torch.nn.functional.softplus(op.dt_projs_bias)
    assert dt.min() >= 1e-4 and dt.max() <= 0.1 + 1e-6 and dt.min() < 2e-3  # logU[1e-3, 0.1]
    bound = op.dt_rank ** -0.5
    assert op.dt_projs_weight.abs().max() <= bound and op.dt_projs_weight.abs().max() > 0.9 * bound


@pytest.mark.parametrize('arch,size,expected', [
    ('tiny', (224, 224), [(56, 56), (28, 28), (14, 14), (7, 7)]),
    ('tiny', (112, 137), [(28, 35), (14, 18), (7, 9), (4, 5)]),
    ('tiny_s2l5', (65, 65), [(17, 17), (9, 9), (5, 5), (3, 3)]),
    ('vanilla_tiny', (112, 137), [(28, 35), (14, 18), (7, 9), (4, 5)]),
    ('vanilla_tiny', (61, 67), [(16, 17), (8, 9), (4, 5), (2, 3)]),
])
def test_backbone_output_shapes(arch, size, expected):
    model = VMamba(arch=arch).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *size))
    dims = ARCH_SETTINGS[resolve_arch(arch)[0]]['dims']
    assert [tuple(o.shape) for o in outs] == [(2, dims * 2 ** i, *hw) for i, hw in enumerate(expected)]
    assert model.num_features == [dims * 2 ** i for i in range(4)]


def test_classifier_forward_and_backward():
    model = VSSM(arch='tiny_s2l5', num_classes=7, drop_path_rate=0.1)
    logits = model(torch.randn(2, 3, 64, 48))
    assert logits.shape == (2, 7)
    logits.square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.layers[0].blocks[0].op.A_logs.grad.abs().sum() > 0


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = VMamba(arch='tiny_s2l5', drop_path_rate=0.0)
    ckpt = VMamba(arch='tiny_s2l5', drop_path_rate=0.0, with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 32, 32)
    grads = []
    for m in (plain, ckpt):
        sum(o.sum() for o in m(x)).backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-5, atol=1e-6, msg=n)


def test_ss2d_matches_the_official_cross_scan_formulation():
    """The model projects before permuting; the official code cross-scans first. Same result."""
    torch.manual_seed(0)
    op = VSSM(arch='vanilla_tiny').layers[1].blocks[0].op.double()
    B, H, W = 2, 5, 3
    x = torch.randn(B, op.d_inner, H, W, dtype=torch.float64)
    xs = cross_scan_ref(x)  # (B, 4, Di, L)
    x_dbl = torch.einsum('bkdl,kcd->bkcl', xs, op.x_proj_weight)
    dts, Bs, Cs = torch.split(x_dbl, [op.dt_rank, op.d_state, op.d_state], dim=2)
    dts = torch.einsum('bkrl,kdr->bkdl', dts, op.dt_projs_weight)
    ys = selective_scan_ref(xs.flatten(1, 2), dts.flatten(1, 2), -torch.exp(op.A_logs), Bs, Cs, op.Ds,
                            op.dt_projs_bias.flatten(), delta_softplus=True)
    expected = cross_merge_ref(ys.view(B, 4, op.d_inner, H * W), H, W)
    # op.scan takes and returns channels-last maps (B, H, W, Di)
    torch.testing.assert_close(op.scan(x.permute(0, 2, 3, 1)), expected.permute(0, 2, 3, 1), rtol=1e-9, atol=1e-9)


def _official_file(tmp_path, model, ema=None):
    """Write ``model`` as an official classification checkpoint, its yacs config object included (the
    ``yacs.config`` module exists only while saving, as on a machine without yacs)."""
    return official_file(tmp_path / 'official.pth', model.state_dict(), (ema or model).state_dict())


def test_official_checkpoint_round_trip(tmp_path):
    src, ema = VSSM(arch='tiny').eval(), VSSM(arch='tiny').eval()
    path = _official_file(tmp_path, src, ema)
    with pytest.raises((pickle.UnpicklingError, ImportError)):
        torch.load(path, weights_only=True)  # why the allowlist admits the config class
    ckpt = load_checkpoint_file(path)
    assert ckpt['epoch'] == 262 and ckpt['config']['MODEL']['TYPE'] == 'vssm'
    x = torch.randn(1, 3, 64, 64)
    for key, ref in ((None, src), ('model_ema', ema)):
        dst = VSSM(arch='tiny').eval()
        load_official_weights(dst, path, key=key)
        with torch.no_grad():
            torch.testing.assert_close(dst(x), ref(x), rtol=0, atol=0)
    dst.load_state_dict(ckpt['model'], strict=True)  # the official 'model' entry loads strictly as it is


def test_wrong_variant_checkpoint_says_which_it_is(tmp_path):
    path = _official_file(tmp_path, VSSM(arch='tiny_s2l5'))
    with pytest.raises(CheckpointMismatchError, match="looks like a 'tiny_s2l5' checkpoint"):
        load_official_weights(VSSM(arch='tiny'), path)
    backbone = VMamba(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CheckpointMismatchError, match='shape mismatches'):
        backbone.init_weights()


def test_backbone_pretrained_loads_trunk_and_keeps_fresh_output_norms(tmp_path):
    src = VSSM(arch='tiny_s2l5')
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.rand_like(p))  # make every tensor differ from a fresh init
    path = _official_file(tmp_path, src)
    backbone = VMamba(arch='tiny_s2l5', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    backbone.init_weights()
    src_sd, sd = src.state_dict(), backbone.state_dict()
    for k, v in sd.items():
        if k.startswith('outnorm'):
            assert torch.equal(v, torch.ones_like(v) if k.endswith('weight') else torch.zeros_like(v)), k
        else:
            assert torch.equal(v, src_sd[k]), k
    missing = VMamba(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'nope.pth')))
    with pytest.raises(FileNotFoundError, match='checkpoints/'):
        missing.init_weights()


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain'])
def test_registry_builds_under_each_scope(scope):
    registry = importlib.import_module(f'{scope}.registry').MODELS
    model = registry.build(dict(type='VMamba', arch='tiny', out_indices=(0, 1, 2, 3), drop_path_rate=0.2,
                                frozen_stages=-1, with_cp=False, init_cfg=None))
    assert isinstance(model, VMamba) and model.arch_name == 'tiny_s1l8'


def test_frozen_stages_follow_swin():
    model = VMamba(arch='tiny_s2l5', frozen_stages=2)
    model.train()
    frozen = ('patch_embed.', 'layers.0.', 'layers.1.', 'outnorm0.', 'outnorm1.')
    for name, p in model.named_parameters():
        assert p.requires_grad == (not name.startswith(frozen)), name
    assert not model.layers[1].training and model.layers[2].training and not model.patch_embed.training
    everything = VMamba(arch='tiny_s2l5', frozen_stages=4).train()
    assert not any(p.requires_grad for p in everything.parameters())


def test_user_errors_are_explained():
    with pytest.raises(KeyError, match='Unknown VMamba arch .*tiny_s1l8'):
        VSSM(arch='tiny_s3')
    with pytest.raises(KeyError, match='unknown keys'):
        VSSM(arch=dict(dims=32, depths=(1, 1, 1, 1), d_stat=4))
    model = VMamba(arch='tiny')
    with pytest.raises(ValueError, match='4-D image batch'):
        model(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match='3 input channels'):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match='out_indices'):
        VMamba(arch='tiny', out_indices=(4,))


def test_custom_arch_dict():
    model = VSSM(arch=dict(dims=16, depths=(1, 1, 2, 1), d_state=4), num_classes=3)
    assert model.arch_name == 'custom' and model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
