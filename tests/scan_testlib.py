"""Shared inputs, references and tolerances for the vmamba.ops tests."""
import functools
import os

import torch

from vmamba.ops import selective_scan_ref, ss2d_scan_ref

#: Where the backends run: CPU (Triton under the interpreter, see conftest.py) unless VMAMBA_TEST_GPU=1.
DEVICE = 'cuda' if os.environ.get('VMAMBA_TEST_GPU') == '1' else 'cpu'
BACKENDS = ('torch', 'triton')
#: mamba's test tolerances (rtol, atol) for half-precision inputs (tests/ops/test_selective_scan.py).
HALF_TOL = {torch.float16: (3e-3, 5e-3), torch.bfloat16: (3e-2, 5e-2)}
GRAD_NAMES = ('du', 'ddelta', 'dA', 'dB', 'dC', 'dD', 'ddelta_bias')
SS2D_GRAD_NAMES = ('dx',) + GRAD_NAMES[1:]  # the fused op takes x where the plain op takes u

# (batch, groups, channels per group, d_state, L) of the plain op: every L in {1, 7, 64, 130, 2049+} and N in
# {1, 4, 16}.
PLAIN_CASES = [
    (2, 2, 3, 1, 1),
    (2, 2, 3, 4, 7),
    (2, 2, 2, 16, 64),
    (2, 4, 4, 1, 130),
    (1, 2, 3, 4, 130),
    (1, 2, 1, 1, 2049),
    (1, 1, 2, 4, 2051),
]
# (batch, D, d_state, H, W) of the fused op: odd and non-square maps, N in {1, 4, 16}, and one map with
# L = 2115 > 2049.
SS2D_CASES = [
    (2, 3, 1, 1, 1),
    (2, 3, 4, 3, 5),
    (1, 2, 16, 7, 9),
    (2, 4, 1, 13, 11),
    (1, 2, 1, 45, 47),
]


def scan_inputs(batch, groups, dim, d_state, length, seed=0, with_D=True, with_bias=True):
    """Plain-scan inputs in float64 with VMamba-like scales: A = -exp(N(0, 0.5)), delta around softplus^-1(0.05)."""
    g = torch.Generator().manual_seed(seed)
    ch = groups * dim
    f64 = dict(dtype=torch.float64)
    u = torch.randn(batch, ch, length, generator=g, **f64)
    delta = torch.randn(batch, ch, length, generator=g, **f64) * 0.5 - 1.0
    A = -torch.exp(torch.randn(ch, d_state, generator=g, **f64) * 0.5)
    B = torch.randn(batch, groups, d_state, length, generator=g, **f64)
    C = torch.randn(batch, groups, d_state, length, generator=g, **f64)
    D = torch.randn(ch, generator=g, **f64) if with_D else None
    bias = torch.randn(ch, generator=g, **f64) * 0.5 - 2.0 if with_bias else None
    return [u, delta, A, B, C, D, bias]


def ss2d_inputs(batch, dim, d_state, H, W, seed=0):
    """Fused-op inputs in float64, channels-last: x (b, H, W, D), delta (b, H, W, 4, D), B/C (b, H, W, 4, N),
    params (4D, ...)."""
    g = torch.Generator().manual_seed(seed)
    f64 = dict(dtype=torch.float64)
    x = torch.randn(batch, H, W, dim, generator=g, **f64)
    delta = torch.randn(batch, H, W, 4, dim, generator=g, **f64) * 0.5 - 1.0
    A = -torch.exp(torch.randn(4 * dim, d_state, generator=g, **f64) * 0.5)
    B = torch.randn(batch, H, W, 4, d_state, generator=g, **f64)
    C = torch.randn(batch, H, W, 4, d_state, generator=g, **f64)
    D = torch.randn(4 * dim, generator=g, **f64)
    bias = torch.randn(4 * dim, generator=g, **f64) * 0.5 - 2.0
    return [x, delta, A, B, C, D, bias]


def cast_inputs(inputs, dtype, device=DEVICE):
    """Data tensors (first five but A) to ``dtype``; A/D/bias stay float32 as the op requires."""
    out = []
    for i, t in enumerate(inputs):
        if t is None:
            out.append(None)
            continue
        is_param = i == 2 or i >= 5
        want = torch.float32 if is_param and dtype != torch.float64 else dtype
        out.append(t.to(device=device, dtype=want).requires_grad_())
    return out


def output_grad(shape, seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def run(fn, inputs, dy):
    """Output and gradients of every input (None where the input is None)."""
    y = fn(*inputs)
    live = [t for t in inputs if t is not None]
    grads = iter(torch.autograd.grad(y, live, dy.to(device=y.device, dtype=y.dtype)))
    return y, [None if t is None else next(grads) for t in inputs]


@functools.lru_cache(maxsize=None)
def plain_reference(case, softplus=True):
    """float64 sequential-reference output and gradients for a plain-scan case (cached across backends)."""
    inputs = cast_inputs(scan_inputs(*case), torch.float64, 'cpu')
    dy = output_grad((case[0], case[1] * case[2], case[4]))
    return run(lambda *a: selective_scan_ref(*a, delta_softplus=softplus), inputs, dy)


@functools.lru_cache(maxsize=None)
def ss2d_reference(case):
    inputs = cast_inputs(ss2d_inputs(*case), torch.float64, 'cpu')
    batch, dim, _, H, W = case
    return run(ss2d_scan_ref, inputs, output_grad((batch, H, W, dim)))


def assert_rel_close(actual, expected, rel, name):
    """Norm-wise relative error: max |actual - expected| <= rel * max |expected| (+ a tiny floor)."""
    actual = actual.detach().to('cpu', torch.float64)
    err = (actual - expected).abs().max().item()
    scale = expected.abs().max().item()
    assert err <= rel * scale + 1e-12, f'{name}: max error {err:.3e} > {rel:g} x max |ref| {scale:.3e}'


def assert_outputs_close(y, grads, y_ref, grads_ref, names, rel=1e-5, dtype=None):
    """y and every gradient (named ``names``) against the reference with :func:`assert_rel_close`; each has the
    reference's shape and, if given, ``dtype``."""
    assert len(grads) == len(grads_ref) == len(names), (len(grads), len(grads_ref), names)
    for name, g, g_ref in zip(('y',) + tuple(names), (y,) + tuple(grads), (y_ref,) + tuple(grads_ref)):
        assert g.shape == g_ref.shape, f'{name}: shape {tuple(g.shape)}, reference {tuple(g_ref.shape)}'
        assert dtype is None or g.dtype == dtype, f'{name}: dtype {g.dtype}, expected {dtype}'
        assert_rel_close(g, g_ref, rel, name)


def assert_half_close(actual, expected, dtype, name):
    """mamba's half-precision tolerances, atol scaled by the tensor's magnitude (gradients are sums)."""
    rtol, atol = HALF_TOL[dtype]
    actual = actual.detach().to('cpu', torch.float64)
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol * scale, msg=lambda m: f'{name}: {m}')
