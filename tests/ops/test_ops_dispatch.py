"""Backend choice, argument checks, autocast, FLOPs convention and tracing of the scan ops."""
import pytest
import torch

from ops_testlib import cast_inputs, scan_inputs, ss2d_inputs
from vmamba.ops import flops_selective_scan, resolve_backend, selective_scan, ss2d_selective_scan
from vmamba.ops.dispatch import ENV_VAR, numba_available


def test_resolve_backend_order(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_backend(None, 'cpu') == ('numba' if numba_available() else 'torch')
    assert resolve_backend(None, 'cuda') == 'triton'
    assert resolve_backend('auto', 'cuda') == 'triton'
    monkeypatch.setenv(ENV_VAR, 'triton')
    assert resolve_backend(None, 'cpu') == 'triton'
    assert resolve_backend('torch', 'cuda') == 'torch'  # the argument beats the environment
    monkeypatch.setenv(ENV_VAR, 'cuda_kernel')
    with pytest.raises(ValueError, match=ENV_VAR):
        resolve_backend(None, 'cpu')
    with pytest.raises(ValueError, match='numba, torch, triton'):
        resolve_backend('fast', 'cpu')


def test_env_var_switches_backend(monkeypatch):
    """The env var reaches the op: both backends agree on the same inputs (fp32)."""
    inputs = cast_inputs(scan_inputs(1, 2, 2, 2, 20), torch.float32)
    monkeypatch.setenv(ENV_VAR, 'torch')
    y_torch = selective_scan(*inputs, delta_softplus=True)
    monkeypatch.setenv(ENV_VAR, 'triton')
    y_triton = selective_scan(*inputs, delta_softplus=True)
    torch.testing.assert_close(y_triton, y_torch, rtol=1e-5, atol=1e-5)


def test_bad_shapes_get_clear_errors():
    u, delta, A, B, C, D, bias = cast_inputs(scan_inputs(1, 2, 3, 2, 10), torch.float32)
    with pytest.raises(ValueError, match='B and C must be'):
        selective_scan(u, delta, A, B[..., :9], C[..., :9], D, bias)
    with pytest.raises(ValueError, match='A must be'):
        selective_scan(u, delta, A[:5], B, C, D, bias)
    with pytest.raises(ValueError, match='do not split'):
        B4 = torch.zeros(1, 4, 2, 10)
        selective_scan(u, delta, A, B4, B4, D, bias)
    with pytest.raises(TypeError, match='float32'):
        selective_scan(u.long(), delta, A, B, C)
    x, dl, A4, B2, C2, D4, bias4 = cast_inputs(ss2d_inputs(1, 2, 1, 3, 4), torch.float32)
    with pytest.raises(ValueError, match=r'\(batch, H, W, 4, D\)'):
        ss2d_selective_scan(x, dl[..., :2, :], A4, B2, C2, D4, bias4)
    with pytest.raises(ValueError, match=r'must be \(batch, H, W, D\)'):
        ss2d_selective_scan(x[0], dl, A4, B2, C2, D4, bias4)


def test_triton_rejects_float64():
    inputs = cast_inputs(scan_inputs(1, 1, 2, 1, 8), torch.float64, 'cpu')
    with pytest.raises(TypeError, match="backend='torch'"):
        selective_scan(*inputs, backend='triton')


def test_autocast_keeps_fp32_math():
    """Under CPU autocast (bf16) the op still computes in fp32 on fp32 inputs: same result as without autocast."""
    inputs = cast_inputs(ss2d_inputs(1, 4, 2, 5, 6), torch.float32, 'cpu')
    plain = ss2d_selective_scan(*inputs)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        auto = ss2d_selective_scan(*inputs)
        auto.sum().backward()
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, plain)
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in inputs)


def test_mixed_input_dtypes_are_promoted():
    u, delta, A, B, C, D, bias = cast_inputs(scan_inputs(1, 2, 2, 2, 12), torch.float32, 'cpu')
    y = selective_scan(u.bfloat16(), delta, A, B, C, D, bias, delta_softplus=True, out_float=False)
    assert y.dtype == torch.float32


def test_flops_convention():
    # 9 * B * L * D * N (+ B * D * L for the D skip), the official VMamba/mamba convention.
    assert flops_selective_scan(2, 384, 3136, 1) == 9 * 2 * 3136 * 384 + 2 * 384 * 3136
    assert flops_selective_scan(2, 384, 3136, 16, with_D=False) == 9 * 2 * 3136 * 384 * 16


@pytest.mark.filterwarnings('ignore::FutureWarning')  # torch.jit.trace is deprecated, but it is what fvcore uses
def test_fused_op_traces_as_one_python_op():
    """A jit trace shows the fused op as a single ``vmamba::ss2d_scan`` node (the custom op)."""
    x, delta, A, B, C, D, bias = (t.detach() for t in cast_inputs(ss2d_inputs(1, 2, 1, 3, 4), torch.float32, 'cpu'))

    class Core(torch.nn.Module):
        def forward(self, x, delta, B, C):
            return ss2d_selective_scan(x, delta, A, B, C, D, bias)

    graph = torch.jit.trace(Core(), (x, delta, B, C), check_trace=False).graph
    ops = [n.kind() for n in graph.nodes() if n.kind().startswith(('prim::PythonOp', 'vmamba::'))]
    assert ops == ['vmamba::ss2d_scan']
