"""The timing helpers, and each analysis tool end to end on a tiny CPU case (the file it writes is checked)."""
import json

import numpy as np
import pytest
import torch

from analysis_testlib import tool
from vmamba.analysis.subjects import VSSMSubject
from vmamba.analysis.timing import autocast_dtype, measure_inference, measure_training

TINY_ARCH = dict(dims=8, depths=(1, 1, 1, 1))


def count_backward_passes(subject):
    calls = []
    next(subject.model.parameters()).register_hook(lambda grad: calls.append(1))
    return calls


def test_training_measure_runs_forward_loss_backward_each_iteration():
    subject = VSSMSubject(TINY_ARCH)
    calls = count_backward_passes(subject)
    t = measure_training(subject, 2, 32, 32, warmup=1, iters=2, amp='auto')
    assert len(calls) == 3  # warm-up + timed, one backward each
    assert (t.mode, t.batch, t.height, t.width, t.iters, t.dtype) == ('training', 2, 32, 32, 2, 'float32')
    assert t.seconds > 0 and t.images_per_s == pytest.approx(4 / t.seconds)
    assert all(p.grad is None for p in subject.model.parameters())  # gradients are not kept between steps


def test_inference_measure_builds_no_graph():
    subject = VSSMSubject(TINY_ARCH)
    calls = count_backward_passes(subject)
    t = measure_inference(subject, 1, 32, 32, warmup=1, iters=1)
    assert not calls and t.mode == 'inference' and t.images_per_s > 0
    assert not subject.model.training


def test_loss_needs_targets():
    subject = VSSMSubject(TINY_ARCH)
    with pytest.raises(ValueError, match='targets=True'):
        subject.loss(subject.batch(1, 32, 32))
    assert subject.loss(subject.batch(2, 32, 32, targets=True)).ndim == 0


def test_autocast_choice():
    assert autocast_dtype('auto', 'cpu') is None and autocast_dtype('off', 'cpu') is None
    assert autocast_dtype('bf16', 'cpu') is torch.bfloat16
    with pytest.raises(ValueError, match='amp must be'):
        autocast_dtype('fp8', 'cpu')


def test_benchmark_tool_compares_with_swin(tmp_path):
    out = tmp_path / 'bench.json'
    tool('benchmark').main(['tiny', '--device', 'cpu', '--shape', '64', '--batch', '1', '--warmup', '0',
                            '--iters', '1', '--out', str(out)])
    rows = json.loads(out.read_text())
    assert [(r['model'], r['mode']) for r in rows] == [
        ('tiny', 'inference'), ('tiny', 'training'), ('swin_t', 'inference'), ('swin_t', 'training')]
    for r in rows:
        assert r['images_per_s'] > 0 and (r['height'], r['width'], r['batch']) == (64, 64, 1)
        assert r['peak_mem_mb'] is None or r['peak_mem_mb'] >= 0


def test_erf_tool_writes_png_and_maps(tmp_path):
    out = tmp_path / 'erf.png'
    tool('erf').main(['tiny', 'resnet50', '--size', '64', '--num-images', '2', '--batch', '2', '--device', 'cpu',
                      '--out', str(out)])
    from PIL import Image
    with Image.open(out) as png:
        assert png.format == 'PNG' and png.width > png.height > 100
    maps = np.load(tmp_path / 'erf.npz')
    assert sorted(maps.files) == ['resnet50', 'tiny']
    for name in maps.files:
        erf = maps[name]
        assert erf.shape == (64, 64) and np.isfinite(erf).all() and erf.min() >= 0 and erf.max() > 0
    summary = json.loads((tmp_path / 'erf.json').read_text())['models']
    assert summary['tiny']['images'] == 2 and summary['tiny']['weights'] == 'random init'


def test_scaling_tool_flops_grow_with_pixels(tmp_path):
    out = tmp_path / 'scaling.png'
    tool('scaling').main(['tiny', 'resnet50', '--sizes', '64', '96', '--batch', '1', '--warmup', '0',
                          '--iters', '1', '--device', 'cpu', '--out', str(out)])
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    rows = json.loads((tmp_path / 'scaling.json').read_text())['rows']
    flops = {(r['model'], r['size']): r['gflops'] for r in rows}
    for model in ('tiny', 'resnet50'):
        # Both are linear in the number of pixels away from the fixed-cost head: (96/64)^2 = 2.25.
        assert flops[(model, 96)] / flops[(model, 64)] == pytest.approx(2.25, rel=0.02)
    assert all(r['images_per_s'] > 0 for r in rows)
