"""The scan ops as ``torch.library`` custom ops: schema, fake (meta) implementations, autograd registration.

``torch.library.opcheck`` runs each op for real and under fake tensors and checks that the fake implementation
promises what the real one returns (shapes, dtypes, strides, no aliasing), that autograd is registered the way
``torch.compile`` / AOTAutograd needs, and that the op survives ``make_fx`` tracing with dynamic shapes.
"""
import pytest
import torch

from scan_testlib import cast_inputs, scan_inputs, ss2d_inputs
from vmamba.ops import selective_scan, ss2d_selective_scan
from vmamba.ops.dispatch import numba_available

CPU_BACKENDS = ['torch', pytest.param('numba', marks=pytest.mark.skipif(not numba_available(),
                                                                         reason='numba is not installed'))]


def _detached(inputs, requires_grad):
    return [None if t is None else t.detach().requires_grad_(requires_grad) for t in inputs]


@pytest.mark.parametrize('backend', CPU_BACKENDS)
@pytest.mark.parametrize('with_params', [True, False], ids=['D+bias', 'no-D-no-bias'])
def test_opcheck_ss2d(backend, with_params):
    inputs = cast_inputs(ss2d_inputs(2, 3, 2, 5, 4), torch.float32, 'cpu')
    if not with_params:
        inputs[5] = inputs[6] = None
    plain = _detached(inputs, False)
    torch.library.opcheck(torch.ops.vmamba.ss2d_scan.default, (*plain, True, backend))
    grad = _detached(inputs, True)
    torch.library.opcheck(torch.ops.vmamba.ss2d_scan_fwd.default, (*grad, True, backend))


@pytest.mark.parametrize('backend', CPU_BACKENDS)
def test_opcheck_plain(backend):
    inputs = cast_inputs(scan_inputs(2, 2, 3, 2, 12), torch.float32, 'cpu')
    torch.library.opcheck(torch.ops.vmamba.selective_scan.default, (*_detached(inputs, False), True, True, backend))
    torch.library.opcheck(torch.ops.vmamba.selective_scan_fwd.default,
                          (*_detached(inputs, True), True, True, backend))


def test_opcheck_triton_fake_matches_saved():
    """The Triton backend saves chunk states; its fake stand-ins must match them (interpreter on CPU)."""
    inputs = cast_inputs(ss2d_inputs(1, 4, 1, 3, 5), torch.float32, 'cpu')
    torch.library.opcheck(torch.ops.vmamba.ss2d_scan_fwd.default, (*_detached(inputs, True), True, 'triton'),
                          test_utils=('test_schema', 'test_faketensor'))


def test_grad_mode_picks_the_op():
    """No grad needed -> the y-only op (what export sees); grad needed -> the op with autograd, same values."""
    inputs = cast_inputs(ss2d_inputs(1, 3, 1, 4, 3), torch.float32, 'cpu')
    with torch.no_grad():
        y0 = ss2d_selective_scan(*inputs)
    y1 = ss2d_selective_scan(*inputs)
    assert y0.grad_fn is None and y1.grad_fn is not None
    torch.testing.assert_close(y0, y1, rtol=0, atol=0)
    u = cast_inputs(scan_inputs(1, 1, 2, 1, 6), torch.float32, 'cpu')
    with torch.no_grad():
        assert selective_scan(*u).grad_fn is None
    assert selective_scan(*u).grad_fn is not None


def test_env_var_is_read_when_the_op_runs(monkeypatch):
    """An unknown backend in the environment fails with a message naming the variable, from inside the op."""
    inputs = _detached(cast_inputs(ss2d_inputs(1, 2, 1, 3, 3), torch.float32, 'cpu'), False)
    monkeypatch.setenv('VMAMBA_SCAN_BACKEND', 'cuda_kernel')
    with pytest.raises(ValueError, match='VMAMBA_SCAN_BACKEND'):
        ss2d_selective_scan(*inputs)
