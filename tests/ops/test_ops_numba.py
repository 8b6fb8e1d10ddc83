"""The compiled CPU backend (vmamba.ops.numba_backend) against the float64 sequential reference, and its own
claims: deterministic and thread-count independent gradients, nothing saved by the forward, accurate transcendentals."""
import sys

import numpy as np
import pytest
import torch

numba = pytest.importorskip('numba')

import scan_testlib  # noqa: E402
from scan_testlib import (GRAD_NAMES, PLAIN_CASES, SS2D_GRAD_NAMES, assert_half_close,  # noqa: E402
                         assert_outputs_close, assert_rel_close, cast_inputs, output_grad, plain_reference, run,
                         scan_inputs, ss2d_inputs, ss2d_reference)
from vmamba.ops import (resolve_backend, selective_scan, selective_scan_ref, ss2d_scan_ref,  # noqa: E402
                        ss2d_selective_scan)
from vmamba.ops import numba_backend  # noqa: E402
from vmamba.ops.numba_backend import fastmath, team  # noqa: E402
from vmamba.ops.dispatch import ENV_VAR  # noqa: E402

# the torch/triton cases (N = 1 with many chunks among them: L = 2115 > the N = 1 chunk length), plus several
# channel blocks (a ragged one) and N = 16 with many backward chunks
SS2D_CASES = scan_testlib.SS2D_CASES + [(2, 70, 1, 9, 13), (1, 20, 16, 9, 11)]


def _fused(*a):
    return ss2d_selective_scan(*a, backend='numba')


def _plain(softplus=True, out_float=True):
    return lambda *a: selective_scan(*a, delta_softplus=softplus, out_float=out_float, backend='numba')


def _scan_dominated_ss2d(batch, dim, N, H, W, seed=3):
    """Fused-op inputs where the skip term is small (D x 0.05) and the decays are neither ~0 nor ~1."""
    x, delta, A, B, C, D, bias = ss2d_inputs(batch, dim, N, H, W, seed=seed)
    return [x, delta, A, B, C, D * 0.05, bias]


@pytest.mark.parametrize('case', SS2D_CASES, ids=lambda c: 'b{}d{}n{}_{}x{}'.format(*c))
def test_ss2d_fp32_matches_reference(case):
    y_ref, grads_ref = ss2d_reference(case)
    y, grads = run(_fused, cast_inputs(ss2d_inputs(*case), torch.float32), output_grad(y_ref.shape))
    assert_outputs_close(y, grads, y_ref, grads_ref, SS2D_GRAD_NAMES, dtype=torch.float32)


def test_ss2d_scan_dominated_inputs():
    """Small D skip: the output is the scan's, so a wrong scan (route, decay, state) cannot pass."""
    case = (2, 24, 4, 11, 13)
    raw = _scan_dominated_ss2d(*case)
    exact = cast_inputs(raw, torch.float64, 'cpu')
    dy = output_grad((2, 11, 13, 24))
    y_ref, grads_ref = run(ss2d_scan_ref, exact, dy)
    plain = [t.detach() for t in exact]
    no_scan = ss2d_scan_ref(*plain[:3], torch.zeros_like(plain[3]), *plain[4:])  # B = 0: only the D skip
    assert (y_ref - no_scan).abs().max() > 0.5 * y_ref.abs().max()  # the scan is most of the output
    y, grads = run(_fused, cast_inputs(raw, torch.float32), dy)
    assert_outputs_close(y, grads, y_ref, grads_ref, SS2D_GRAD_NAMES)


@pytest.mark.parametrize('case', PLAIN_CASES, ids=lambda c: 'b{}k{}d{}n{}L{}'.format(*c))
def test_plain_fp32_matches_reference(case):
    y_ref, grads_ref = plain_reference(case)
    y, grads = run(_plain(), cast_inputs(scan_inputs(*case), torch.float32), output_grad(y_ref.shape))
    assert_outputs_close(y, grads, y_ref, grads_ref, GRAD_NAMES, dtype=torch.float32)


def test_plain_optional_arguments():
    """No D, no delta_bias, no softplus, and an output in the input dtype."""
    case = (2, 2, 4, 4, 70)
    raw = scan_inputs(*case, with_D=False, with_bias=False)
    raw[1] = raw[1].abs() * 0.1  # without softplus the raw delta is the step size: keep it positive
    dy = output_grad((2, 8, 70))
    y_ref, grads_ref = run(lambda *a: selective_scan_ref(*a), cast_inputs(raw, torch.float64, 'cpu'), dy)
    y, grads = run(_plain(softplus=False, out_float=False), cast_inputs(raw, torch.float32), dy)
    assert_rel_close(y, y_ref, 1e-5, 'y')
    assert grads[5] is None and grads[6] is None
    for name, g, g_ref in list(zip(GRAD_NAMES, grads, grads_ref))[:5]:
        assert_rel_close(g, g_ref, 1e-5, name)


def test_ss2d_without_D_and_bias():
    x, delta, A, B, C, _, _ = cast_inputs(ss2d_inputs(2, 5, 2, 4, 6), torch.float32)
    exact = [t.detach().double().requires_grad_() for t in (x, delta, A, B, C)]
    dy = output_grad((2, 4, 6, 5))
    y_ref, g_ref = run(lambda *a: ss2d_scan_ref(*a, None, None), exact, dy)
    y, g = run(lambda *a: ss2d_selective_scan(*a, None, None, backend='numba'), [x, delta, A, B, C], dy)
    assert_rel_close(y, y_ref, 1e-5, 'y')
    for name, a, b in zip(SS2D_GRAD_NAMES, g, g_ref):
        assert_rel_close(a, b, 1e-5, name)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_inputs(dtype):
    """fp16/bf16 inputs: fp32 math inside, fp32 output, gradients in the input dtypes; mamba's tolerances."""
    inputs = cast_inputs(ss2d_inputs(2, 4, 4, 5, 7), dtype)
    exact = [t.detach().to('cpu', torch.float64).requires_grad_() for t in inputs]
    dy = output_grad((2, 5, 7, 4))
    y_ref, grads_ref = run(ss2d_scan_ref, exact, dy)
    y, grads = run(_fused, inputs, dy)
    assert y.dtype == torch.float32
    assert_half_close(y, y_ref, dtype, 'y')
    for name, t, g, g_ref in zip(SS2D_GRAD_NAMES, inputs, grads, grads_ref):
        assert g.dtype == t.dtype, name
        assert_half_close(g, g_ref, dtype, name)
    inputs = cast_inputs(scan_inputs(2, 2, 4, 4, 130), dtype)
    exact = [t.detach().to('cpu', torch.float64).requires_grad_() for t in inputs]
    dy = output_grad((2, 8, 130))
    y_ref, grads_ref = run(lambda *a: selective_scan_ref(*a, delta_softplus=True), exact, dy)
    y, grads = run(_plain(out_float=False), inputs, dy)
    assert y.dtype == dtype
    assert_half_close(y, y_ref, dtype, 'y')
    for name, t, g, g_ref in zip(GRAD_NAMES, inputs, grads, grads_ref):
        assert g.dtype == t.dtype, name
        assert_half_close(g, g_ref, dtype, name)


def test_strided_operands_as_the_model_passes_them():
    """x a channels-last view of a conv output, B/C slices of one x_proj output, delta laid out route by route:
    read in place (no copy), forward and all gradients."""
    batch, dim, N, H, W, R = 2, 72, 2, 5, 7, 3
    x, delta, A, B, C, D, bias = _scan_dominated_ss2d(batch, dim, N, H, W)
    packed = torch.randn(batch, H, W, 4, R + 2 * N, dtype=torch.float64)
    packed[..., R:R + N], packed[..., R + N:] = B, C
    delta_routes = delta.permute(3, 0, 1, 2, 4).contiguous().permute(1, 2, 3, 0, 4)
    x_cl = x.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
    dy = output_grad((batch, H, W, dim))
    y_ref, grads_ref = run(ss2d_scan_ref, cast_inputs([x, delta, A, B, C, D, bias], torch.float64, 'cpu'), dy)
    f32 = [t.float() for t in (x_cl, delta_routes, A, packed, D, bias)]
    x32, d32, A32, p32, D32, b32 = [t.requires_grad_() for t in f32]
    B32, C32 = p32[..., R:R + N], p32[..., R + N:]
    assert not B32.is_contiguous() and not d32.is_contiguous()
    y = ss2d_selective_scan(x32, d32, A32, B32, C32, D32, b32, backend='numba')
    grads = torch.autograd.grad(y, [x32, d32, A32, p32, D32, b32], dy.float())
    dB, dC = grads[3][..., R:R + N], grads[3][..., R + N:]
    assert_outputs_close(y, [grads[0], grads[1], grads[2], dB, dC, grads[4], grads[5]], y_ref, grads_ref,
                         SS2D_GRAD_NAMES)


def _all_outputs(fn, inputs, dy):
    y, grads = run(fn, inputs, dy)
    return [y] + [g for g in grads if g is not None]


def _aten_on_openmp():
    return sys.platform.startswith('linux') and 'parallel backend: OpenMP' in torch.__config__.parallel_info()


@pytest.mark.parametrize('threads_from', ['omp_team', 'pool'])
@pytest.mark.parametrize('op', ['ss2d', 'plain'])
def test_deterministic_and_thread_count_independent(op, threads_from, monkeypatch):
    """Bitwise-equal outputs and gradients: run to run, and with 1 vs 2 threads (several batch elements, channel
    blocks and backward chunks are reduced), with the threads of torch's OpenMP team (Linux torch builds) and of
    the module's own pool (elsewhere)."""
    calls = []
    if threads_from == 'pool':
        monkeypatch.setattr(team, 'available', lambda: False)
    elif not _aten_on_openmp():
        pytest.skip('ATen does not run on OpenMP here')
    else:
        assert team.available(), 'ATen runs on OpenMP but its runtime was not found in /proc/self/maps'
        run_team = team.run
        monkeypatch.setattr(team, 'run', lambda *a: calls.append(1) or run_team(*a))
    if op == 'ss2d':
        inputs, fn, dy = cast_inputs(ss2d_inputs(2, 80, 2, 17, 23), torch.float32), _fused, output_grad((2, 17, 23, 80))
    else:
        inputs, fn, dy = cast_inputs(scan_inputs(2, 2, 70, 2, 600), torch.float32), _plain(), output_grad((2, 140, 600))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        first, second = _all_outputs(fn, inputs, dy), _all_outputs(fn, inputs, dy)
        torch.set_num_threads(1)
        single = _all_outputs(fn, inputs, dy)
    finally:
        torch.set_num_threads(threads)
    for k, (a, b, c) in enumerate(zip(first, second, single)):
        assert torch.equal(a, b), f'output {k} differs between two runs'
        assert torch.equal(a, c), f'output {k} differs between 2 threads and 1'
    # forward and backward (and the dB/dC block sums) of both 2-thread runs went through the team
    assert len(calls) >= (4 if threads_from == 'omp_team' else 0)


def test_omp_team_can_be_disabled(monkeypatch):
    monkeypatch.setenv('VMAMBA_CPU_TEAM', '0')
    assert team._find_runtime() is None


def test_forward_saves_nothing():
    x, delta, A, B, C, D, bias = cast_inputs(ss2d_inputs(1, 3, 2, 3, 4), torch.float32)
    with torch.no_grad():
        y, saved = numba_backend.ss2d_fwd(x, delta, A, B, C, D, bias, True)
        assert saved == () and y.shape == x.shape
        u, dl, A2, B2, C2, D2, b2 = cast_inputs(scan_inputs(1, 2, 3, 2, 9), torch.float32)
        y2, saved2 = numba_backend.scan_fwd(u, dl, A2, B2, C2, D2, b2, True, torch.float32)
        assert saved2 == () and y2.shape == u.shape
    assert numba_backend.ss2d_saved_like(x, delta, A, B, C) == ()
    assert numba_backend.scan_saved_like(u, dl, A2, B2, C2) == ()
    grads = numba_backend.ss2d_bwd(x, delta, A, B, C, D, bias, True, torch.ones_like(y), None)
    assert [tuple(g.shape) for g in grads] == [tuple(t.shape) for t in (x, delta, A, B, C, D, bias)]


def test_float64_is_delegated_to_the_torch_backend():
    inputs = cast_inputs(ss2d_inputs(1, 1, 1, 2, 3), torch.float64, 'cpu')
    assert torch.autograd.gradcheck(_fused, inputs)
    inputs = cast_inputs(scan_inputs(1, 1, 2, 2, 5), torch.float64, 'cpu')
    assert torch.autograd.gradcheck(_plain(), inputs)


def test_fp16_long_sequence_stays_finite():
    """L = 66,000 (detection at stride 4; many backward chunks): fp32 state and output past the fp16 range."""
    length, ch = 66_000, 2
    u = torch.ones(1, ch, length, dtype=torch.float16)
    delta = torch.full((1, ch, length), 3.0, dtype=torch.float16)
    A = torch.full((ch, 1), -1e-8)
    B = torch.ones(1, 1, 1, length, dtype=torch.float16)
    C = torch.ones(1, 1, 1, length, dtype=torch.float16)
    inputs = [t.requires_grad_() for t in (u, delta, A, B, C, torch.ones(ch), torch.zeros(ch))]
    y = selective_scan(*inputs, delta_softplus=True, backend='numba')
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    expected = (length * torch.nn.functional.softplus(torch.tensor(3.0)) + 1.0).item()
    assert abs(y[0, 0, -1].item() - expected) < 1e-2 * expected
    grads = torch.autograd.grad(y.sum() * 1e-6, inputs)
    for name, g in zip(GRAD_NAMES, grads):
        assert torch.isfinite(g.float()).all(), name


def test_default_cpu_backend_is_numba(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_backend(None, 'cpu') == 'numba'


def _vectorised(fn):
    @numba.njit
    def apply(a, out):
        for i in range(a.shape[0]):
            out[i] = fn(a[i])
    return apply


def _ulp_error(got, ref):
    spacing = np.spacing(np.abs(ref.astype(np.float32))).astype(np.float64)
    return np.abs(got.astype(np.float64) - ref) / spacing


@pytest.mark.parametrize('name,lo,hi,ref,max_ulp', [
    ('fexp', -87.0, 88.0, np.exp, 1.5),
    ('fexp2', -126.0, 127.0, np.exp2, 1.5),
    ('flog1p', 0.0, 1.0, np.log1p, 1.5),
    ('fsoftplus', -80.0, 30.0, lambda z: np.where(z > 20, z, np.log1p(np.exp(z))), 2.5),
    ('fsigmoid', -80.0, 30.0, lambda z: np.where(z > 20, 1.0, 1 / (1 + np.exp(-z))), 3.0),
])
def test_transcendentals(name, lo, hi, ref, max_ulp):
    """The polynomial exp / exp2 / log1p / softplus / sigmoid against float64 numpy, in fp32 ulps (measured:
    1.26, 1.18, 1.41, 2.04, 2.40 ulp)."""
    a = np.linspace(lo, hi, 400_001).astype(np.float32)
    out = np.empty_like(a)
    _vectorised(getattr(fastmath, name))(a, out)
    err = _ulp_error(out, ref(a.astype(np.float64)))
    assert err.max() <= max_ulp, f'{name}: {err.max():.2f} ulp at {a[err.argmax()]}'


def test_transcendental_edge_values():
    f32 = np.float32
    assert np.isnan(fastmath.fexp(f32(np.nan))) and np.isnan(fastmath.fsoftplus(f32(np.nan)))
    assert 0 <= fastmath.fexp(f32(-1000.0)) < 1.2e-38 and fastmath.fexp(f32(0.0)) == 1.0
    assert fastmath.fexp2(f32(-1000.0)) < 1.2e-38 and fastmath.fexp2(f32(3.0)) == 8.0
    assert fastmath.fsoftplus(f32(25.0)) == 25.0 and fastmath.fsigmoid(f32(25.0)) == 1.0


def _model_outputs(model, x, backend, monkeypatch):
    monkeypatch.setenv(ENV_VAR, backend)
    model.zero_grad()
    out = model(x)
    out.square().sum().backward()
    return out.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize('arch', ['tiny', 'vanilla_small'])
def test_model_numba_equals_torch(arch, monkeypatch):
    """A whole model, forward and every parameter gradient, numba vs the torch backend, with weights for which
    the scan dominates (no D skip, larger steps, larger x_proj)."""
    from vmamba.deploy.weights import stress_weights
    from vmamba.models import VSSM
    from vmamba.models.variants import ARCH_SETTINGS
    if arch == 'vanilla_small':  # the vanilla design (d_state 16, gate) at one block per stage, width 32
        arch = {k: v for k, v in ARCH_SETTINGS['vanilla_tiny'].items() if k != 'checkpoint'}
        arch.update(dims=32, depths=(1, 1, 1, 1))
    torch.manual_seed(0)
    model = stress_weights(VSSM(arch=arch, num_classes=10, drop_path_rate=0.0))
    x = torch.randn(1, 3, 32, 32)
    out_t, grads_t = _model_outputs(model, x, 'torch', monkeypatch)
    out_n, grads_n = _model_outputs(model, x, 'numba', monkeypatch)
    assert out_t.abs().max() > 0.1
    torch.testing.assert_close(out_n, out_t, rtol=1e-4, atol=1e-4)
    assert grads_n.keys() == grads_t.keys() and len(grads_t) > 30
    for name, g in grads_t.items():
        scale = g.abs().max().item()
        err = (grads_n[name] - g).abs().max().item()
        assert err <= 1e-3 * scale + 1e-6, f'{name}: {err:.2e} vs max |grad| {scale:.2e}'
