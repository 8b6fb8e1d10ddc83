"""Compiled CPU selective scan (numba): the default backend for CPU tensors when numba is installed.

One module per concern:

* :mod:`.fastmath`: branch-free fp32 exp / exp2 / log1p / softplus / sigmoid polynomials and an LLVM prefetch,
  so that the kernels' loops vectorise;
* :mod:`.kernels`: the forward and backward kernels (SIMD over a block of channels, fused SS2D routes read in
  place, backward recomputed segment by segment) and the dB / dC block sum;
* :mod:`.team`: the kernels as cfuncs on torch's own OpenMP thread team, their argument block declared once by
  the kernels' annotated signatures;
* :mod:`.pool`: this backend's thread pool, where the team is not available (or ``VMAMBA_CPU_TEAM=0``);
* :mod:`.host`: operands as flat buffers + strides, the split into programs and tasks;
* :mod:`.jit`: the compile options shared by all of them (``VMAMBA_NUMBA_NOCACHE=1`` disables numba's cache).

Results are deterministic and independent of the thread count (see :mod:`.kernels`). Nothing is saved by the
forward (``saved == ()``). dtypes: fp32/fp16/bf16 inputs (halves converted to fp32 once), fp32 math and state,
gradients in the input dtypes. **float64** inputs (gradcheck) are delegated to the float64 torch backend
(:mod:`vmamba.ops.torch_scan`), which recomputes its saved step sizes in the backward so that this backend
still saves nothing. The plain op runs the same kernels as the fused SS2D one, on channels-last copies of
u/delta/dy (one copy each way); its B/C are read in place.

Backend interface: as :mod:`vmamba.ops.torch_scan` (``scan_fwd``/``scan_bwd``/``ss2d_fwd``/``ss2d_bwd``, and
``*_saved_like``).
"""
try:
    import numba  # noqa: F401
except ImportError as err:  # dispatch falls back to the torch backend
    raise ImportError(f'vmamba.ops.numba_backend needs numba ({err}); install numba or use backend="torch"') from err

import torch

from .host import core_bwd, core_fwd, n_threads
from .kernels import CB

__all__ = ['scan_fwd', 'scan_bwd', 'ss2d_fwd', 'ss2d_bwd', 'scan_saved_like', 'ss2d_saved_like', 'n_threads', 'CB']


def scan_saved_like(u, delta, A, B, C):
    """What :func:`scan_fwd` saves: nothing."""
    return ()


def ss2d_saved_like(x, delta, A, B, C):
    """What :func:`ss2d_fwd` saves: nothing."""
    return ()


def _is_f64(*tensors):
    return any(t is not None and t.dtype == torch.float64 for t in tensors)


def _torch_backend():
    from .. import torch_scan
    return torch_scan


def scan_fwd(u, delta, A, B, C, D, delta_bias, delta_softplus, out_dtype):
    """Plain scan forward: u/delta (batch, K*Dg, L), B/C (batch, K, N, L). Returns ``(y, ())``."""
    if _is_f64(u, delta, B, C):
        return _torch_backend().scan_fwd(u, delta, A, B, C, D, delta_bias, delta_softplus, out_dtype)[0], ()
    batch, channels, L = u.shape
    K = B.shape[1]
    Dg = channels // K
    # channels-last copies (batch, 1, L, channels); B/C are read in place as (b, i=0, j=t, slot=k, n)
    u_cl = u.detach().transpose(1, 2).to(torch.float32).contiguous().unsqueeze(1)
    d_cl = delta.detach().transpose(1, 2).to(torch.float32).contiguous().view(batch, 1, L, K, Dg)
    Bv = B.detach().permute(0, 3, 1, 2).unsqueeze(1)  # (b, 1, L, K, N) view
    Cv = C.detach().permute(0, 3, 1, 2).unsqueeze(1)
    y = core_fwd(u_cl, d_cl, A, Bv, Cv, D, delta_bias, delta_softplus, K, 1, Dg, 1, L)
    return y.view(batch, L, channels).transpose(1, 2).to(out_dtype).contiguous(), ()


def scan_bwd(u, delta, A, B, C, D, delta_bias, delta_softplus, dy, saved):
    """All seven gradients (du, ddelta, dA, dB, dC, dD, ddelta_bias) in the dtypes of their inputs."""
    if _is_f64(u, delta, B, C):
        ts = _torch_backend()
        _, saved64 = ts.scan_fwd(u, delta, A, B, C, D, delta_bias, delta_softplus, u.dtype)
        return ts.scan_bwd(u, delta, A, B, C, D, delta_bias, delta_softplus, dy, saved64)
    batch, channels, L = u.shape
    K = B.shape[1]
    Dg = channels // K
    u_cl = u.detach().transpose(1, 2).to(torch.float32).contiguous().unsqueeze(1)
    d_cl = delta.detach().transpose(1, 2).to(torch.float32).contiguous().view(batch, 1, L, K, Dg)
    dy_cl = dy.detach().transpose(1, 2).to(torch.float32).contiguous().unsqueeze(1)
    Bv = B.detach().permute(0, 3, 1, 2).unsqueeze(1)
    Cv = C.detach().permute(0, 3, 1, 2).unsqueeze(1)
    du, ddt, dA, dB, dC, dD, dbias = core_bwd(u_cl, d_cl, A, Bv, Cv, D, delta_bias, delta_softplus, dy_cl,
                                              K, 1, Dg, 1, L)
    first = lambda t, dtype: t.view(batch, L, channels).transpose(1, 2).to(dtype).contiguous()  # noqa: E731
    groups = lambda t, dtype: t.view(batch, L, K, -1).permute(0, 2, 3, 1).to(dtype).contiguous()  # noqa: E731
    return (first(du, u.dtype), first(ddt, delta.dtype), dA.to(A.dtype), groups(dB, B.dtype), groups(dC, C.dtype),
            None if dD is None else dD.to(D.dtype), None if dbias is None else dbias.to(delta_bias.dtype))


def ss2d_fwd(x, delta, A, B, C, D, delta_bias, delta_softplus):
    """Fused SS2D forward on channels-last operands: x (batch, H, W, Dm), delta (batch, H, W, 4, Dm),
    B/C (batch, H, W, 4, N). Returns ``(y (batch, H, W, Dm) fp32, ())``."""
    if _is_f64(x, delta, B, C):
        return _torch_backend().ss2d_fwd(x, delta, A, B, C, D, delta_bias, delta_softplus)[0], ()
    batch, H, W, Dm = x.shape
    y = core_fwd(x, delta, A, B, C, D, delta_bias, delta_softplus, 1, 4, Dm, H, W)
    return y, ()


def ss2d_bwd(x, delta, A, B, C, D, delta_bias, delta_softplus, dy, saved):
    """Fused SS2D backward: (dx, ddelta, dA, dB, dC, dD, ddelta_bias) in the shapes and dtypes of the inputs."""
    if _is_f64(x, delta, B, C):
        ts = _torch_backend()
        _, saved64 = ts.ss2d_fwd(x, delta, A, B, C, D, delta_bias, delta_softplus)
        return ts.ss2d_bwd(x, delta, A, B, C, D, delta_bias, delta_softplus, dy, saved64)
    batch, H, W, Dm = x.shape
    dx, ddelta, dA, dB, dC, dD, dbias = core_bwd(x, delta, A, B, C, D, delta_bias, delta_softplus, dy,
                                                 1, 4, Dm, H, W)
    return (dx.to(x.dtype), ddelta.to(delta.dtype), dA.to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
            None if dD is None else dD.to(D.dtype), None if dbias is None else dbias.to(delta_bias.dtype))
