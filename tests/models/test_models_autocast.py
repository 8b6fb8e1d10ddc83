"""SS2D under autocast: mixed precision must leave the selective scan in float32.

Under ``torch.autocast`` the projections around the scan run in half precision, which is what mixed precision
is for, but the scan itself must not: its state accumulates over every position of a route, and its parameters
(A, D, the step bias) are small-range numbers that half precision would round. The custom op is not autocast,
so a test of the op alone cannot catch anything; what can go wrong is on the model's path into and out of it
(a parameter cast to the activations' dtype, a backend computing or returning in its input dtype, a backward
in half precision). This test follows the real SS2D forward and backward under CPU autocast and compares what
the scan produced with a float64 evaluation of the same, already half-rounded, inputs.
"""
import pytest
import torch

import vmamba.models.ss2d as ss2d_module
from vmamba.models import SS2D
from vmamba.ops import ss2d_scan_ref
from vmamba.ops.dispatch import ENV_VAR, numba_available

#: Allowed error of the scan against float64 on the same inputs, relative to the largest value. Rounding the
#: float64 result to bfloat16 alone misses it tenfold (asserted below), so a scan that computes, accumulates,
#: or returns in half precision cannot pass, while float32 math is far inside it.
BOUND = 1e-4

BACKENDS = ['torch', pytest.param('numba', marks=pytest.mark.skipif(not numba_available(), reason='no numba')),
            'triton']


def rel_err(actual, expected):
    return ((actual.double() - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.parametrize('backend', BACKENDS)
def test_autocast_keeps_the_scan_in_fp32(backend, monkeypatch):
    monkeypatch.setenv(ENV_VAR, backend)
    torch.manual_seed(0)
    op = SS2D(16, d_state=4, ssm_ratio=2.0)  # Mamba init: steps of 1e-3..1e-1, so the state spans the routes
    x = torch.randn(2, 10, 12, 16)
    calls = []
    real = ss2d_module.ss2d_selective_scan

    def spy(*args, **kwargs):
        for t in args[2:]:  # A, D, delta_bias as the model computed them from its parameters
            t.retain_grad()
        y = real(*args, **kwargs)
        y.retain_grad()
        calls.append((args, kwargs, y))
        return y

    monkeypatch.setattr(ss2d_module, 'ss2d_selective_scan', spy)
    normed = []
    op.out_norm.register_forward_pre_hook(lambda module, inputs: normed.append(inputs[0]))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = op(x)
    out.float().square().sum().backward()

    (args, kwargs, y), = calls
    u, delta, A, B, C, D, bias = args
    assert {t.dtype for t in (u, delta, B, C)} == {torch.bfloat16}  # autocast is on around the scan ...
    assert (A.dtype, D.dtype, bias.dtype, y.dtype) == (torch.float32,) * 4  # ... not in it
    assert normed[0].dtype == torch.float32  # and the merged result reaches out_norm as it left the scan

    ref_inputs = [t.detach().double().requires_grad_() for t in args]
    ref = ss2d_scan_ref(*ref_inputs, **kwargs)
    assert rel_err(ref.to(torch.bfloat16), ref) > 10 * BOUND  # the bound tells float32 from half precision
    assert rel_err(y, ref) < BOUND, 'forward'

    # Backward: the gradients of the scan's parameters (sums over every position) in float32 precision too.
    ref_grads = torch.autograd.grad(ref, ref_inputs[2:], y.grad.double())
    for name, t, want in zip(('A', 'D', 'delta_bias'), (A, D, bias), (ref_grads[0], *ref_grads[3:])):
        assert t.grad.dtype == torch.float32, name
        assert rel_err(t.grad, want) < BOUND, name
    for p in (op.A_logs, op.Ds, op.dt_projs_bias, op.x_proj_weight, op.dt_projs_weight):
        assert p.dtype == p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
