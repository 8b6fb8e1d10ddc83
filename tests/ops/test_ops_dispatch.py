"""Backend choice, argument checks, FLOPs convention and tracing of the scan ops.

(Autocast is checked through the model, where it can go wrong: tests/models/test_models_autocast.py.)"""
import sys

import pytest
import torch

from scan_testlib import cast_inputs, scan_inputs, ss2d_inputs
from vmamba.ops import resolve_backend, selective_scan, ss2d_selective_scan
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


def test_mixed_input_dtypes_are_promoted():
    u, delta, A, B, C, D, bias = cast_inputs(scan_inputs(1, 2, 2, 2, 12), torch.float32, 'cpu')
    y = selective_scan(u.bfloat16(), delta, A, B, C, D, bias, delta_softplus=True, out_float=False)
    assert y.dtype == torch.float32


@pytest.mark.parametrize('arch', ['vanilla_tiny', 'tiny_s1l8'])
def test_flops_convention_reproduces_the_published_counts(arch):
    """The scan's count, 9·B·L·D·N + B·D·L (:func:`flops_selective_scan`), with fvcore's count of the rest of the
    model gives the official ImageNet GFLOPs at 224² to the 0.01 G they are printed with.

    The published numbers were counted by the official code, independently of this one. The scan is a third of
    vanilla-T's count (d_state 16), so a coefficient other than 9 moves it off 5.63; the D-skip term is 0.2 %
    of vanilla-T and 0.1 % of T (d_state 1), and leaving it out moves both off their printed values.
    """
    from vmamba.analysis import count_complexity
    from vmamba.analysis.reference import CLASSIFICATION
    from vmamba.models import VSSM

    result = count_complexity(VSSM(arch=arch), torch.randn(1, 3, 224, 224))
    assert round(result.flops / 1e9, 2) == CLASSIFICATION[arch]['gflops']


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


class _CudaLike:
    """What the backend choice reads of a tensor (device, dtype), for a CUDA device this machine may not have."""

    def __init__(self, dtype=torch.float16):
        self.device, self.dtype = torch.device('cuda', 0), dtype


@pytest.fixture
def fresh_choice(monkeypatch):
    """A clean slate for the per-device state of the backend choice, and a GPU of the capability asked for."""
    from vmamba.ops import dispatch
    monkeypatch.delenv(ENV_VAR, raising=False)
    for name, empty in (('_FAILED', {}), ('_CONFIRMED', set()), ('_WARNED', set())):
        monkeypatch.setattr(dispatch, name, empty)
    dispatch._triton_import_problem.cache_clear()
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda device=None: 'Tesla T4')

    def gpu(capability):
        monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda device=None: capability)
    yield dispatch, gpu
    dispatch._triton_import_problem.cache_clear()


def test_missing_triton_gives_cuda_tensors_the_torch_backend(fresh_choice, monkeypatch):
    dispatch, gpu = fresh_choice
    gpu((9, 0))
    monkeypatch.setitem(sys.modules, 'vmamba.ops.triton_backend', None)  # as if triton were not installed
    with pytest.warns(RuntimeWarning, match='not Triton: triton is not importable') as record:
        assert dispatch._impl('auto', _CudaLike()).__name__ == 'vmamba.ops.torch_scan'
        assert dispatch._impl('auto', _CudaLike()).__name__ == 'vmamba.ops.torch_scan'
    assert len(record) == 1  # one warning, not one per call
    with pytest.raises(RuntimeError, match="cannot run here: triton is not importable.*backend='torch'"):
        dispatch._impl('triton', _CudaLike())


def test_bf16_on_turing_runs_the_torch_scan(fresh_choice):
    dispatch, gpu = fresh_choice
    gpu((7, 5))
    assert dispatch._impl('auto', _CudaLike(torch.float16)).__name__ == 'vmamba.ops.triton_backend'
    with pytest.warns(RuntimeWarning, match='bf16 inputs on sm_75'):
        assert dispatch._impl('auto', _CudaLike(torch.bfloat16)).__name__ == 'vmamba.ops.torch_scan'
    with pytest.raises(RuntimeError, match='bf16 inputs on sm_75'):
        dispatch._impl('triton', _CudaLike(torch.bfloat16))
    gpu((7, 0))
    with pytest.raises(RuntimeError, match='Tesla T4 is sm_70; .*sm_75 and newer'):
        dispatch._impl('triton', _CudaLike())


def test_a_failed_first_compile_falls_back_once(fresh_choice, monkeypatch):
    """A Triton that cannot compile for this GPU fails at the first launch: that call and every later one on the
    device run the torch backend, with one warning naming the error; out-of-memory is never retried."""
    dispatch, gpu = fresh_choice
    gpu((12, 0))
    from vmamba.ops import torch_scan, triton_backend
    calls = []

    def broken(*args):
        calls.append('triton')
        raise RuntimeError('PTXAS error: Value sm_120a is not defined for option gpu-name')
    monkeypatch.setattr(triton_backend, 'ss2d_fwd', broken, raising=False)
    monkeypatch.setattr(torch_scan, 'ss2d_fwd', lambda *args: calls.append('torch') or 'y', raising=False)
    with pytest.warns(RuntimeWarning, match='first call failed.*sm_120a is not defined') as record:
        assert dispatch._run('auto', _CudaLike(), 'ss2d_fwd') == 'y'
        assert dispatch._run('auto', _CudaLike(), 'ss2d_fwd') == 'y'
    assert calls == ['triton', 'torch', 'torch'] and len(record) == 1

    def oom(*args):
        raise torch.OutOfMemoryError('CUDA out of memory')
    monkeypatch.setattr(triton_backend, 'ss2d_fwd', oom, raising=False)
    with pytest.raises(torch.OutOfMemoryError):
        dispatch._run('auto', _CudaLike(torch.float32), 'ss2d_fwd')


def test_images_beyond_32bit_offsets_are_refused():
    """Offsets inside one image are 32-bit in the kernels (the image index is 64-bit: compile_facts checks the
    PTX), so an image whose delta holds more than 2^31 elements is refused in one line. Expanded views: no memory."""
    side, dim = 16384, 2048  # 2^28 positions x 4 routes x 2048 channels = 2^41 elements per image
    x = torch.zeros(1, 1, 1, 1).expand(1, side, side, dim)
    delta = torch.zeros(1, 1, 1, 1, 1).expand(1, side, side, 4, dim)
    B = torch.zeros(1, 1, 1, 1, 1).expand(1, side, side, 4, 1)
    A = -torch.ones(4 * dim, 1)
    with pytest.raises(ValueError, match=r'ss2d_fwd: one image of .* more than the Triton kernels. 32-bit'):
        ss2d_selective_scan(x, delta, A, B, B, backend='triton')
