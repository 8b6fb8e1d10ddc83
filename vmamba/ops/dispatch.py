"""Public scan ops: argument checks, backend choice, and the ``torch.library`` custom ops around the backends.

Everything that decides *which* implementation runs lives here (:func:`resolve_backend`). Each public op is a
custom op of the ``vmamba`` namespace (``torch.ops.vmamba.ss2d_scan``, ``torch.ops.vmamba.selective_scan``), with
a fake implementation (shapes and dtypes, no data) and its backward registered as custom ops too. So:

- ``torch.compile(model, fullgraph=True)`` sees one opaque node per call (no graph break, no chunk loops to
  unroll), forward and backward;
- ``torch.export`` gives one node per call, with symbolic (dynamic) batch and spatial sizes;
- a jit trace (FLOPs counters, the ONNX exporter in :mod:`vmamba.deploy`) shows one ``vmamba::`` node per call.

A backend is a module with ``scan_fwd``/``scan_bwd``/``ss2d_fwd``/``ss2d_bwd`` (see :mod:`.torch_scan`); one
that saves tensors for its backward also has ``scan_saved_like``/``ss2d_saved_like`` (empty stand-ins of them,
for the fake implementations).
"""
import functools
import importlib
import math
import os
import warnings
from typing import Optional

import torch

from .routes import CrossMerge, CrossScan

__all__ = ['BACKENDS', 'resolve_backend', 'numba_available', 'selective_scan', 'ss2d_selective_scan', 'cross_scan',
           'cross_merge', 'flops_selective_scan']

#: Backend name -> module implementing it.
BACKENDS = {'torch': 'vmamba.ops.torch_scan', 'triton': 'vmamba.ops.triton_backend',
            'numba': 'vmamba.ops.numba_backend'}
ENV_VAR = 'VMAMBA_SCAN_BACKEND'
_FLOAT_INPUTS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def resolve_backend(backend=None, device=None):
    """Name of the backend to run: ``backend`` if given, else ``$VMAMBA_SCAN_BACKEND``, else by device:
    ``'triton'`` for CUDA tensors; for CPU tensors ``'numba'`` (the compiled CPU scan) when numba is installed,
    else ``'torch'`` (the chunked PyTorch scan, the fallback). ``'auto'`` means "by device"."""
    name = backend or os.environ.get(ENV_VAR) or 'auto'
    name = name.strip().lower()
    if name == 'auto':
        if device is not None and torch.device(device).type == 'cuda':
            return 'triton'
        return 'numba' if numba_available() else 'torch'
    if name not in BACKENDS:
        source = 'backend=' if backend else f'${ENV_VAR}='
        raise ValueError(f'Unknown selective-scan backend {source}{name!r}; choose one of '
                         f'{", ".join(sorted(BACKENDS))} or "auto".')
    return name


@functools.lru_cache(maxsize=None)
def numba_available():
    """Whether the compiled CPU backend can run: numba importable (the chunked torch scan is the fallback)."""
    try:
        importlib.import_module(BACKENDS['numba'])
    except ImportError:
        return False
    return True


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
    if name == 'numba':
        try:
            return importlib.import_module(BACKENDS[name])
        except ImportError as err:
            raise RuntimeError(f'The numba selective-scan backend needs the `numba` package ({err}). Install it '
                               f"(python tools/install.py does), or use backend='torch' / {ENV_VAR}=torch.") from err
    return importlib.import_module(BACKENDS[name])


#: The oldest GPU generation the kernels are compiled and checked for (compile_facts: sm_75 on), and the first
#: that the bf16 paths are checked on (Turing has no bf16 arithmetic; Triton emulates its conversions there).
MIN_CAPABILITY = (7, 5)
BF16_CAPABILITY = (8, 0)
#: Offsets inside one image are 32-bit in the kernels (the batch term is 64-bit, checked by compile_facts).
MAX_IMAGE_ELEMENTS = 2 ** 31 - 1


@functools.lru_cache(maxsize=None)
def _triton_import_problem():
    try:
        importlib.import_module(BACKENDS['triton'])
    except Exception as err:  # noqa: BLE001  (a broken triton fails in several ways)
        return f'triton is not importable ({type(err).__name__}: {str(err).strip().splitlines()[0][:200]})'
    return None


def triton_problem(device, dtype=None):
    """Why the Triton kernels cannot serve CUDA tensors of ``dtype`` on ``device`` (a one-line reason), or None."""
    device = torch.device(device)
    if device.type != 'cuda':
        return None
    problem = _triton_import_problem() or _FAILED.get((str(device), dtype))
    if problem:
        return problem
    cc = torch.cuda.get_device_capability(device)
    arch = f'sm_{cc[0]}{cc[1]}'
    if cc < MIN_CAPABILITY:
        return (f'{torch.cuda.get_device_name(device)} is {arch}; the Triton kernels are built and checked for '
                f'sm_{MIN_CAPABILITY[0]}{MIN_CAPABILITY[1]} and newer')
    if dtype == torch.bfloat16 and cc < BF16_CAPABILITY:
        return f'bf16 inputs on {arch} (no bf16 arithmetic before sm_80); use fp16 or fp32 for the Triton kernels'
    return None


#: (device, dtype) -> why the first Triton call there failed; and the pairs where one has succeeded.
_FAILED = {}
_CONFIRMED = set()
_WARNED = set()


def _fallback_warning(problem):
    if problem not in _WARNED:
        _WARNED.add(problem)
        warnings.warn(f'vmamba selective scan: CUDA tensors run the torch backend, not Triton: {problem}.',
                      RuntimeWarning, stacklevel=4)


def _check_image_size(name, t, per_image):
    if per_image > MAX_IMAGE_ELEMENTS:
        raise ValueError(f'{name}: one image of {tuple(t.shape)} holds {per_image:,} elements, more than the '
                         f"Triton kernels' 32-bit offsets within an image reach (2^31); use backend='torch' or "
                         'split the image into tiles')


def _named(backend):
    """Whether the user named the backend (argument or environment) rather than leaving it to the device."""
    return backend != 'auto' or (os.environ.get(ENV_VAR) or 'auto').strip().lower() != 'auto'


def _impl(backend, t):
    """The backend module for tensor ``t``: ``backend`` by name, or by device for 'auto'. Under 'auto', CUDA
    tensors that Triton cannot serve (see :func:`triton_problem`) get the torch backend and one warning; a named
    ``'triton'`` says why in one line instead."""
    name = resolve_backend(None if backend == 'auto' else backend, t.device)
    if name == 'triton' and t.device.type == 'cuda':
        problem = triton_problem(t.device, t.dtype)
        if problem:
            if not _named(backend):
                _fallback_warning(problem)
                return _backend_module('torch', t.device)
            raise RuntimeError(f"The triton selective-scan backend cannot run here: {problem}; use backend='torch' "
                               f'or {ENV_VAR}=torch.')
    return _backend_module(name, t.device)


def _run(backend, t, fn, *args):
    """``impl.<fn>(*args)``. The first Triton call per (device, dtype) under 'auto' is where a compile failure
    shows (a Triton or ptxas that does not know this GPU): it then warns once and reruns on the torch backend,
    and so does every later call there, rather than crashing a training run. Argument errors and out-of-memory
    are never retried."""
    impl = _impl(backend, t)
    if impl.__name__ != BACKENDS['triton']:
        return getattr(impl, fn)(*args)
    for a in args:
        if isinstance(a, torch.Tensor) and a.dim() >= 3:
            _check_image_size(fn, a, math.prod(a.shape[1:]))
    key = (str(t.device), t.dtype)
    if t.device.type != 'cuda' or _named(backend) or key in _CONFIRMED:
        return getattr(impl, fn)(*args)
    try:
        out = getattr(impl, fn)(*args)
    except (TypeError, ValueError, torch.OutOfMemoryError):
        raise
    except Exception as err:  # noqa: BLE001  (compile errors come as several types)
        _FAILED[key] = f'its first call failed ({type(err).__name__}: {str(err).strip().splitlines()[0][:200]})'
        _fallback_warning(_FAILED[key])
        return getattr(_backend_module('torch', t.device), fn)(*args)
    _CONFIRMED.add(key)
    return out


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


# ----------------------------------------------------------------------------------------------------------------
# The ops, as torch.library custom ops (namespace ``vmamba``). Each public op has three:
#   <op>      y only, for inference (no autograd): what torch.export / ONNX see under no_grad;
#   <op>_fwd  (y, saved), with autograd registered; saved = what that backend's backward wants (may be []);
#   <op>_bwd  the seven gradients (absent D / delta_bias give empty tensors, mapped to None).
# ``backend`` is a name or 'auto'; it is resolved inside the op, on the tensors' device, so an exported graph
# runs on whichever device it is moved to. Outputs are fresh contiguous tensors (what the fake impls promise).
# ----------------------------------------------------------------------------------------------------------------
Tensor = torch.Tensor


def _fresh(t):
    return t.contiguous()


def _saved_like(impl, kind, *args):
    """Empty stand-ins for a backend's saved tensors (fake impls): ``<kind>_saved_like`` if it has one, else none."""
    fn = getattr(impl, f'{kind}_saved_like', None)
    return list(fn(*args)) if fn is not None else []


def _grads_out(grads):
    """Backend grads -> op outputs: contiguous, the absent dD / ddelta_bias as empty tensors."""
    *main, dD, dbias = grads
    empty = lambda: main[0].new_empty(0, dtype=torch.float32)  # noqa: E731  (two outputs may not alias)
    return (*(_fresh(g) for g in main), empty() if dD is None else _fresh(dD),
            empty() if dbias is None else _fresh(dbias))


def _grads_fake(inputs, D, delta_bias):
    x, delta, A, B, C = inputs
    return (*(torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (x, delta, A, B, C)),
            x.new_empty(0 if D is None else D.shape, dtype=torch.float32 if D is None else D.dtype),
            x.new_empty(0 if delta_bias is None else delta_bias.shape,
                        dtype=torch.float32 if delta_bias is None else delta_bias.dtype))


# -- the plain op ------------------------------------------------------------------------------------------------
def _plain_out_dtype(u, out_float):
    return torch.promote_types(u.dtype, torch.float32) if out_float else u.dtype


@torch.library.custom_op('vmamba::selective_scan', mutates_args=())
def _scan_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
             delta_bias: Optional[Tensor], delta_softplus: bool, out_float: bool, backend: str) -> Tensor:
    y, _ = _run(backend, u, 'scan_fwd', u, delta, A, B, C, D, delta_bias, delta_softplus,
                _plain_out_dtype(u, out_float))
    return _fresh(y)


@torch.library.custom_op('vmamba::selective_scan_fwd', mutates_args=())
def _scan_fwd_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                 delta_bias: Optional[Tensor], delta_softplus: bool, out_float: bool,
                 backend: str) -> tuple[Tensor, list[Tensor]]:
    y, saved = _run(backend, u, 'scan_fwd', u, delta, A, B, C, D, delta_bias, delta_softplus,
                    _plain_out_dtype(u, out_float))
    return _fresh(y), list(saved or ())


@torch.library.custom_op('vmamba::selective_scan_bwd', mutates_args=())
def _scan_bwd_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                 delta_bias: Optional[Tensor], dy: Tensor, saved: list[Tensor], delta_softplus: bool,
                 backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    grads = _run(backend, u, 'scan_bwd', u, delta, A, B, C, D, delta_bias, delta_softplus, dy.contiguous(),
                 saved or None)
    return _grads_out(grads)


@_scan_op.register_fake
def _(u, delta, A, B, C, D, delta_bias, delta_softplus, out_float, backend):
    return torch.empty(u.shape, dtype=_plain_out_dtype(u, out_float), device=u.device)


@_scan_fwd_op.register_fake
def _(u, delta, A, B, C, D, delta_bias, delta_softplus, out_float, backend):
    y = torch.empty(u.shape, dtype=_plain_out_dtype(u, out_float), device=u.device)
    return y, _saved_like(_impl(backend, u), 'scan', u, delta, A, B, C)


@_scan_bwd_op.register_fake
def _(u, delta, A, B, C, D, delta_bias, dy, saved, delta_softplus, backend):
    return _grads_fake((u, delta, A, B, C), D, delta_bias)


# -- the fused SS2D op -------------------------------------------------------------------------------------------
@torch.library.custom_op('vmamba::ss2d_scan', mutates_args=())
def _ss2d_op(x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
             delta_bias: Optional[Tensor], delta_softplus: bool, backend: str) -> Tensor:
    y, _ = _run(backend, x, 'ss2d_fwd', x, delta, A, B, C, D, delta_bias, delta_softplus)
    return _fresh(y)


@torch.library.custom_op('vmamba::ss2d_scan_fwd', mutates_args=())
def _ss2d_fwd_op(x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                 delta_bias: Optional[Tensor], delta_softplus: bool, backend: str) -> tuple[Tensor, list[Tensor]]:
    y, saved = _run(backend, x, 'ss2d_fwd', x, delta, A, B, C, D, delta_bias, delta_softplus)
    return _fresh(y), list(saved or ())


@torch.library.custom_op('vmamba::ss2d_scan_bwd', mutates_args=())
def _ss2d_bwd_op(x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                 delta_bias: Optional[Tensor], dy: Tensor, saved: list[Tensor], delta_softplus: bool,
                 backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    grads = _run(backend, x, 'ss2d_bwd', x, delta, A, B, C, D, delta_bias, delta_softplus, dy, saved or None)
    return _grads_out(grads)


def _ss2d_y_fake(x):
    return torch.empty(x.shape, dtype=torch.float32, device=x.device)


@_ss2d_op.register_fake
def _(x, delta, A, B, C, D, delta_bias, delta_softplus, backend):
    return _ss2d_y_fake(x)


@_ss2d_fwd_op.register_fake
def _(x, delta, A, B, C, D, delta_bias, delta_softplus, backend):
    return _ss2d_y_fake(x), _saved_like(_impl(backend, x), 'ss2d', x, delta, A, B, C)


@_ss2d_bwd_op.register_fake
def _(x, delta, A, B, C, D, delta_bias, dy, saved, delta_softplus, backend):
    return _grads_fake((x, delta, A, B, C), D, delta_bias)


# -- autograd: <op>_fwd saves its inputs and the backend's tensors; the backward is the <op>_bwd op ---------------
def _setup_context(ctx, inputs, output):
    tensors, flags = inputs[:7], inputs[7:]
    _, saved = output
    ctx.save_for_backward(*tensors, *saved)
    ctx.flags = flags
    ctx.optional = (tensors[5] is not None, tensors[6] is not None)


def _unpack(ctx):
    u, delta, A, B, C, D, delta_bias, *saved = ctx.saved_tensors
    return (u, delta, A, B, C, D, delta_bias), saved


def _grads_in(ctx, grads):
    *main, dD, dbias = grads
    has_D, has_bias = ctx.optional
    return (*main, dD if has_D else None, dbias if has_bias else None) + (None,) * len(ctx.flags)


def _scan_backward(ctx, dy, _dsaved):
    tensors, saved = _unpack(ctx)
    softplus, _, backend = ctx.flags
    return _grads_in(ctx, torch.ops.vmamba.selective_scan_bwd(*tensors, dy, saved, softplus, backend))


def _ss2d_backward(ctx, dy, _dsaved):
    tensors, saved = _unpack(ctx)
    softplus, backend = ctx.flags
    return _grads_in(ctx, torch.ops.vmamba.ss2d_scan_bwd(*tensors, dy, saved, softplus, backend))


_scan_fwd_op.register_autograd(_scan_backward, setup_context=_setup_context)
_ss2d_fwd_op.register_autograd(_ss2d_backward, setup_context=_setup_context)


def _needs_grad(*tensors):
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _backend_arg(backend):
    """The ``backend=`` argument as the ops take it: a known name or 'auto' (checked here, resolved in the op)."""
    name = 'auto' if backend is None else str(backend).strip().lower()
    if name != 'auto' and name not in BACKENDS:
        raise ValueError(f'Unknown selective-scan backend backend={name!r}; choose one of '
                         f'{", ".join(sorted(BACKENDS))} or "auto".')
    return name


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
    args = (u, delta, A, B, C, D, delta_bias, bool(delta_softplus), bool(out_float), _backend_arg(backend))
    if _needs_grad(u, delta, A, B, C, D, delta_bias):
        return torch.ops.vmamba.selective_scan_fwd(*args)[0]
    return torch.ops.vmamba.selective_scan(*args)


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
    args = (x, delta, A, B, C, D, delta_bias, bool(delta_softplus), _backend_arg(backend))
    if _needs_grad(x, delta, A, B, C, D, delta_bias):
        return torch.ops.vmamba.ss2d_scan_fwd(*args)[0]
    return torch.ops.vmamba.ss2d_scan(*args)


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
