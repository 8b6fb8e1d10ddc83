"""Public scan ops: argument checks, backend choice, and the autograd functions around the backends.

Everything that decides *which* implementation runs lives here (:func:`resolve_backend`), and each public op
is one :class:`torch.autograd.Function` (:class:`SelectiveScanFn`, :class:`SS2DSelectiveScanFn`), so a jit trace
shows a single ``prim::PythonOp`` node per call that a FLOPs counter can hook by name, and a profiler/FLOPs tool
can also wrap :func:`selective_scan` / :func:`ss2d_selective_scan` in this one module.

A backend is a module with ``scan_fwd``/``scan_bwd``/``ss2d_fwd``/``ss2d_bwd`` (see :mod:`.torch_scan`).

``torch.compile``: the public ops are opaque to Dynamo (``torch.compiler.disable``), i.e. one clean graph break
around a call whose kernels are already fused, instead of Dynamo unrolling the chunk loops.
"""
import functools
import importlib
import os
import warnings

import torch

from .routes import CrossMerge, CrossScan

__all__ = ['BACKENDS', 'resolve_backend', 'selective_scan', 'ss2d_selective_scan', 'cross_scan', 'cross_merge',
           'flops_selective_scan', 'SelectiveScanFn', 'SS2DSelectiveScanFn']

if hasattr(torch.amp, 'custom_fwd'):  # torch >= 2.4
    _custom_fwd = functools.partial(torch.amp.custom_fwd, device_type='cuda')
    _custom_bwd = functools.partial(torch.amp.custom_bwd, device_type='cuda')
else:
    _custom_fwd, _custom_bwd = torch.cuda.amp.custom_fwd, torch.cuda.amp.custom_bwd

#: Backend name -> module implementing it.
BACKENDS = {'torch': 'vmamba.ops.torch_scan', 'triton': 'vmamba.ops.triton_scan'}
ENV_VAR = 'VMAMBA_SCAN_BACKEND'
_FLOAT_INPUTS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def resolve_backend(backend=None, device=None):
    """Name of the backend to run: ``backend`` if given, else ``$VMAMBA_SCAN_BACKEND``, else by device
    (``'triton'`` for CUDA tensors, ``'torch'`` otherwise). ``'auto'`` means "by device"."""
    name = backend or os.environ.get(ENV_VAR) or 'auto'
    name = name.strip().lower()
    if name == 'auto':
        return 'triton' if device is not None and torch.device(device).type == 'cuda' else 'torch'
    if name not in BACKENDS:
        source = 'backend=' if backend else f'${ENV_VAR}='
        raise ValueError(f'Unknown selective-scan backend {source}{name!r}; choose one of '
                         f'{", ".join(sorted(BACKENDS))} or "auto".')
    return name


def _backend_module(name, device):
    """Import the backend, with a clear message when Triton cannot run on these tensors."""
    if name == 'triton':
        try:
            module = importlib.import_module(BACKENDS[name])
        except ImportError as err:  # triton missing or broken
            raise RuntimeError(f'The triton selective-scan backend needs the `triton` package ({err}). '
                               f"Install triton, or use backend='torch' / {ENV_VAR}=torch.") from err
        if torch.device(device).type != 'cuda' and not module.INTERPRET:
            raise RuntimeError('The triton selective-scan backend runs on CUDA tensors, or on CPU tensors only '
                               'under the Triton interpreter: set TRITON_INTERPRET=1 before triton is imported, '
                               f"or use backend='torch' / {ENV_VAR}=torch for CPU tensors.")
        return module
    return importlib.import_module(BACKENDS[name])


def _quiet_under_trace(fn):
    """Inside the op, shapes are plain numbers by design: under ``torch.jit.trace`` (e.g. a FLOPs counter) the
    whole call is one ``prim::PythonOp`` node, so the tracer's warnings about Python-side shape maths are noise."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not torch.jit.is_tracing():
            return fn(*args, **kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', torch.jit.TracerWarning)
            return fn(*args, **kwargs)
    return wrapper


def _check_float(name, t):
    if not t.is_floating_point() or t.dtype not in _FLOAT_INPUTS:
        raise TypeError(f'selective scan: {name} must be float32/float16/bfloat16/float64, got {t.dtype}')


def _check_params(A, D, delta_bias, channels):
    if A.dim() != 2 or A.shape[0] != channels:
        raise ValueError(f'selective scan: A must be (channels={channels}, d_state), got {tuple(A.shape)}')
    if A.dtype not in (torch.float32, torch.float64):
        raise TypeError(f'selective scan: A must be float32 (float64 for gradcheck), got {A.dtype}')
    for name, t in (('D', D), ('delta_bias', delta_bias)):
        if t is not None and tuple(t.shape) != (channels,):
            raise ValueError(f'selective scan: {name} must be ({channels},), got {tuple(t.shape)}')


def _common_dtype(*tensors):
    """u/delta/B/C share one dtype inside the kernels; mixed inputs (e.g. under autocast) are promoted."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return [t.to(dtype) for t in tensors]


class SelectiveScanFn(torch.autograd.Function):
    """The plain selective scan (official semantics); dispatches forward and backward to one backend."""

    @staticmethod
    @_custom_fwd
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus, out_float, backend):
        impl = _backend_module(backend, u.device)
        out_dtype = torch.promote_types(u.dtype, torch.float32) if out_float else u.dtype
        y, saved = impl.scan_fwd(u, delta, A, B, C, D, delta_bias, delta_softplus, out_dtype)
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, *(saved or ()))
        ctx.impl, ctx.delta_softplus = impl, delta_softplus
        return y

    @staticmethod
    @_custom_bwd
    def backward(ctx, dy):
        u, delta, A, B, C, D, delta_bias, *saved = ctx.saved_tensors
        grads = ctx.impl.scan_bwd(u, delta, A, B, C, D, delta_bias, ctx.delta_softplus, dy.contiguous(),
                                  saved or None)
        return (*grads, None, None, None)


class SS2DSelectiveScanFn(torch.autograd.Function):
    """The fused SS2D core (cross-scan -> scan -> cross-merge) as one op; see :func:`ss2d_selective_scan`."""

    @staticmethod
    @_custom_fwd
    def forward(ctx, x, delta, A, B, C, D, delta_bias, delta_softplus, backend):
        impl = _backend_module(backend, x.device)
        y, saved = impl.ss2d_fwd(x, delta, A, B, C, D, delta_bias, delta_softplus)
        ctx.save_for_backward(x, delta, A, B, C, D, delta_bias, *(saved or ()))
        ctx.impl, ctx.delta_softplus = impl, delta_softplus
        return y

    @staticmethod
    @_custom_bwd
    def backward(ctx, dy):
        x, delta, A, B, C, D, delta_bias, *saved = ctx.saved_tensors
        grads = ctx.impl.ss2d_bwd(x, delta, A, B, C, D, delta_bias, ctx.delta_softplus, dy, saved or None)
        return (*grads, None, None)


@torch.compiler.disable
@_quiet_under_trace
def selective_scan(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False, out_float=True,
                   backend=None):
    """Selective scan (Mamba S6) with the official VMamba/mamba semantics.

    Args:
        u, delta: (batch, K*D, L), float32/float16/bfloat16 (float64 allowed on the torch backend).
        A: (K*D, N) float32. B, C: (batch, K, N, L), shared by the D channels of each of the K groups.
        D, delta_bias: optional (K*D,) float32.
        delta_softplus: apply softplus to ``delta + delta_bias`` (identity above 20).
        out_float: return float32 (the input dtype otherwise).
        backend: ``'torch'``, ``'triton'`` or ``'auto'``/None (see :func:`resolve_backend`).

    ``h_t = exp(Δ_t A) h_{t-1} + Δ_t u_t B_t``, ``y_t = <h_t, C_t> + D u_t``; state and math in float32.
    """
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f'selective_scan: u and delta must both be (batch, channels, L); got {tuple(u.shape)} '
                         f'and {tuple(delta.shape)}')
    batch, channels, length = u.shape
    if length == 0:
        raise ValueError('selective_scan: the sequence is empty (L = 0)')
    for name, t in (('u', u), ('delta', delta), ('B', B), ('C', C)):
        _check_float(name, t)
    if B.dim() != 4 or B.shape != C.shape or B.shape[0] != batch or B.shape[3] != length or B.shape[2] != A.shape[-1]:
        raise ValueError(f'selective_scan: B and C must be (batch={batch}, groups, N={A.shape[-1]}, L={length}); '
                         f'got {tuple(B.shape)} and {tuple(C.shape)}')
    if channels % B.shape[1]:
        raise ValueError(f'selective_scan: {channels} channels do not split into {B.shape[1]} B/C groups')
    _check_params(A, D, delta_bias, channels)
    u, delta, B, C = _common_dtype(u, delta, B, C)
    name = resolve_backend(backend, u.device)
    return SelectiveScanFn.apply(u, delta, A, B, C, D, delta_bias, bool(delta_softplus), bool(out_float), name)


@torch.compiler.disable
@_quiet_under_trace
def ss2d_selective_scan(x, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True, backend=None):
    """The SS2D core: scan x along the four routes (row-major, column-major, both reversed) and merge.

    Channels-last operands, each position a contiguous vector of channels (or states):

    Args:
        x: (batch, H, W, D), e.g. the depthwise-conv output viewed channels-last (no copy).
        delta: (batch, H, W, 4, D), route k's Δ at every position (before bias and softplus).
        B, C: (batch, H, W, 4, N); strided views (such as slices of one x_proj output) are fine.
        A: (4*D, N) float32. D, delta_bias: optional (4*D,) float32; route k uses entries k*D .. k*D + D-1.

    Equal to ``cross_merge(selective_scan(cross_scan(x), route(delta), A, route(B), route(C), ...))`` in the
    channel-first layout, returned as the merged (batch, H, W, D) float32 map (what ``out_norm`` takes). The
    Triton backend reads every route's operands in place and never writes the 4x cross-scanned copies.
    """
    if x.dim() != 4:
        raise ValueError(f'ss2d_selective_scan: x must be (batch, H, W, D), got {tuple(x.shape)}')
    batch, H, W, dim = x.shape
    if H * W == 0:
        raise ValueError(f'ss2d_selective_scan: empty feature map {H}x{W}')
    if tuple(delta.shape) != (batch, H, W, 4, dim):
        raise ValueError(f'ss2d_selective_scan: delta must be (batch, H, W, 4, D) = {(batch, H, W, 4, dim)}, '
                         f'got {tuple(delta.shape)}')
    N = A.shape[-1] if A.dim() == 2 else -1
    for name, t in (('B', B), ('C', C)):
        if tuple(t.shape) != (batch, H, W, 4, N):
            raise ValueError(f'ss2d_selective_scan: {name} must be (batch, H, W, 4, N) = {(batch, H, W, 4, N)}, '
                             f'got {tuple(t.shape)}')
    for name, t in (('x', x), ('delta', delta), ('B', B), ('C', C)):
        _check_float(name, t)
    _check_params(A, D, delta_bias, 4 * dim)
    x, delta, B, C = _common_dtype(x, delta, B, C)
    name = resolve_backend(backend, x.device)
    return SS2DSelectiveScanFn.apply(x, delta, A, B, C, D, delta_bias, bool(delta_softplus), name)


def cross_scan(x):
    """(batch, C, H, W) -> (batch, 4, C, H*W): row-major, column-major, and both reversed."""
    return CrossScan.apply(x)


def cross_merge(ys, H, W):
    """(batch, 4, C, H*W) -> (batch, C, H, W): the sum of the routes mapped back; adjoint of :func:`cross_scan`."""
    return CrossMerge.apply(ys, H, W)


def flops_selective_scan(batch, channels, length, d_state, with_D=True):
    """FLOPs of one selective-scan call in the official convention (mamba issue #110, VMamba ``csms6s.py``):
    ``9 * B * L * D * N`` for the recurrence and output, plus ``B * D * L`` for the ``D * u`` skip.

    For :func:`ss2d_selective_scan` pass ``channels = 4 * D`` (the four routes are four scans' worth).
    """
    flops = 9 * batch * length * channels * d_state
    return flops + (batch * channels * length if with_D else 0)
