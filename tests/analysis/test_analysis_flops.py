"""FLOP counting: the official scan convention, and the published numbers it must reproduce.

The published table (official README): ImageNet 224² FLOPs of all nine variants within 0.5 %,
Swin-T 4.5 G and ResNet-50 4.1 G with the same counter, Mask R-CNN VMamba-T ≈ 271 G at 1280×800 and
UperNet VMamba-T ≈ 949 G at 512×2048. Each count traces the real model once (tens of seconds on CPU for
the dense-prediction models), so the table is computed once per module through the tool itself.
"""
import json
import os.path as osp

import pytest
import torch
import torch.nn as nn

import vmamba.models.ss2d as ss2d_module
from vmamba.analysis import SpecError, build_subject, count_complexity
from vmamba.analysis.reference import CLASSIFICATION, DETECTION, SEGMENTATION
from vmamba.analysis.subjects import DetectorSubject
from vmamba.models import ARCH_SETTINGS, SS2D

from analysis_testlib import tool
from repo_testlib import REPO

TOLERANCE = 0.005  # 0.5 %


def test_ss2d_count_is_the_official_sum_of_its_layers():
    """An SS2D counted by hand: linear/conv/einsum MACs, LayerNorm 5 per element, the scan by the formula."""
    B, H, W, C, N, ratio = 2, 5, 6, 8, 3, 2.0
    op = SS2D(C, d_state=N, ssm_ratio=ratio, gated=True)
    Di, R, L, K = op.d_inner, op.dt_rank, H * W, 4
    expected = (B * L * C * 2 * Di           # in_proj (x and z)
                + B * L * Di * 3 * 3         # depthwise 3x3 conv
                + B * L * K * (R + 2 * N) * Di  # x_proj einsum
                + B * L * K * R * Di         # dt_proj einsum
                + 9 * B * L * K * Di * N + B * K * Di * L  # the scan: 9BLDN + BDL with D = 4 Di
                + 5 * B * L * Di             # out_norm
                + B * L * Di * C)            # out_proj; the SiLU gate is free
    result = count_complexity(op, torch.randn(B, H, W, C))
    assert result.flops == expected
    assert result.params == sum(p.numel() for p in op.parameters())
    assert not any(k.startswith('prim::PythonOp') for k in result.uncounted)


def test_counting_never_runs_the_scan_and_restores_it(monkeypatch):
    """The count does not depend on how the op is implemented: it is never called while counting."""
    def broken(*args, **kwargs):
        raise AssertionError('the real scan must not run while counting')

    monkeypatch.setattr(ss2d_module, 'ss2d_selective_scan', broken)
    op = SS2D(8, d_state=1)
    assert count_complexity(op, torch.randn(1, 4, 4, 8)).flops > 0
    assert ss2d_module.ss2d_selective_scan is broken
    with pytest.raises(AssertionError, match='must not run'):
        op(torch.randn(1, 4, 4, 8))


@pytest.fixture(scope='module')
def imagenet_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp('flops') / 'all.json'
    tool('get_flops').main(['--all', '--out', str(out)])
    return {row['model']: row for row in json.loads(out.read_text())}


@pytest.mark.parametrize('arch', list(ARCH_SETTINGS))
def test_imagenet_flops_match_the_paper(imagenet_rows, arch):
    row = imagenet_rows[arch]
    assert (row['height'], row['width']) == (224, 224)
    assert row['flops'] / 1e9 == pytest.approx(CLASSIFICATION[arch]['gflops'], rel=TOLERANCE)
    # Published parameters are rounded to 1 M; the exact counts are tested in tests/models.
    assert abs(row['params'] / 1e6 - CLASSIFICATION[arch]['mparams']) < 0.5
    assert not row['uncounted_custom_ops']


@pytest.mark.parametrize('name, gflops', [('swin_t', 4.5), ('resnet50', 4.1)])
def test_baselines_counted_with_the_same_counter(imagenet_rows, name, gflops):
    assert imagenet_rows[name]['flops'] / 1e9 == pytest.approx(gflops, rel=TOLERANCE)


@pytest.mark.parametrize('config, table, shape', [
    ('configs/detection/maskrcnn_vmamba_tiny_1x.py', DETECTION, (1280, 800)),
    ('configs/segmentation/upernet_vmamba_tiny_160k_ade20k_512x512.py', SEGMENTATION, (512, 2048)),
])
def test_dense_prediction_flops_match_the_paper(tmp_path, config, table, shape):
    out = tmp_path / 'rows.json'
    tool('get_flops').main([osp.join(REPO, config), '--out', str(out)])
    (row,) = json.loads(out.read_text())
    ref = table['tiny_s1l8']
    assert row['arch'] == 'tiny_s1l8' and (row['height'], row['width']) == shape
    assert row['flops'] / 1e9 == pytest.approx(ref['gflops'], rel=TOLERANCE)  # 271.16 G / 948.78 G
    assert row['params'] / 1e6 == pytest.approx(ref['mparams'], rel=TOLERANCE)  # 49.76 M / 61.90 M (aux head in)
    assert not row['uncounted_custom_ops']  # NMS and RoIAlign carry no MACs, as in mmdet's own count


def test_detector_inputs_are_padded_like_mmdet():
    subject = DetectorSubject('toy', nn.Conv2d(3, 3, 1), size_divisor=32)
    assert subject.fit_shape(1333, 800) == (1344, 800)
    assert subject.fit_shape(800, 1280) == (800, 1280)


def test_unknown_model_names_what_is_accepted():
    with pytest.raises(SpecError, match='tiny_s1l8.*swin_t'):
        build_subject('tinny')
    with pytest.raises(SpecError, match='not found'):
        build_subject('configs/detection/no_such_config.py')
    with pytest.raises(SystemExit, match='Unknown model'):
        tool('get_flops').main(['tinny'])
