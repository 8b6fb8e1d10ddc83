"""Host side of the fused SS2D op: operand layout checks, the launches of :func:`ss2d_fwd` / :func:`ss2d_bwd` in
the order the design needs, and the host-side reductions.

Operands (all channels-last, the channel or state axis innermost with stride 1)::

    x      (batch, H, W, D)         the depthwise-conv output, read by all four routes; (H, W, D) dense (any
                                    batch stride), as that conv's channels_last output is, else copied once
    delta  (batch, H, W, 4, D)      route k's step size before bias/softplus
    B, C   (batch, H, W, 4, N)      may be strided views of the x_proj output (no copy needed)
    y      (batch, H, W, D) fp32    the merged output of the four routes; dy like x (copied if not dense)

Launch order per direction: the summary launch of each pair, the segment carry (only with several segments),
then the main launch of the row pair before the column pair (which adds to y, or dx, what the row pair wrote).
Every size comes from the :class:`~.plan.LaunchPlan`; every workspace from :func:`~.plan.bwd_workspaces`.

What remains of host-side work: ``dB``/``dC`` are written in B's dtype directly, except for half-precision B/C
with several backward channel blocks, which are summed over the blocks in fp32 buffers and cast once; dx of a
half-precision x is rounded to x's dtype once per pair (two roundings, where the official cross-merge rounds
at each of its three additions); the per-program dA/dD/d(delta_bias) partials are summed with ``torch.sum``.
"""
import torch

from .plan import LaunchPlan, bwd_workspaces, saved_shapes
from .ss2d_backward import _bwd_kernel, _bwd_summary_kernel
from .ss2d_forward import _fwd_kernel, _fwd_summary_kernel
from .ss2d_shared import LOG2E, _carry_kernel

__all__ = ['ss2d_fwd', 'ss2d_bwd', 'ss2d_saved_like']


def _flat_hw(t):
    """The kernels index positions as h*W + w with one stride: make (H, W) flat if a view is not."""
    return t if t.stride(1) == t.shape[2] * t.stride(2) and t.stride(-1) == 1 else t.contiguous()


def _dense_hw(t):
    """x and dy (batch, H, W, D): (H, W, D) dense, any batch stride, so that x, dy, y and dx share one offset
    per position (s * D: one address computation fewer per position and operand in the column pair, where the
    positions are not affine in the row). The model's x (its depthwise conv's channels_last output) and dy are."""
    return t if t[:1].is_contiguous() else t.contiguous()


def _prepare(x, delta, B, C):
    for t in (x, delta, B, C):
        if t.dtype == torch.float64:
            raise TypeError("The triton selective-scan backend computes in float32; use backend='torch' for "
                            'float64 inputs (e.g. gradcheck).')
    return [_dense_hw(x)] + [_flat_hw(t) for t in (delta, B, C)]


def _params(A, D, delta_bias, ref):
    """fp32 parameters; A scaled by log2(e) once, so that every decay is one exp2, and laid out (4, N, D) as the
    states are."""
    f32 = lambda t: None if t is None else t.detach().to(torch.float32).contiguous()  # noqa: E731
    dummy = torch.empty(1, device=ref.device, dtype=torch.float32)
    A = (f32(A) * LOG2E).view(4, -1, A.shape[1]).transpose(1, 2).contiguous()
    return A, f32(D), f32(delta_bias), dummy


def _carry(p, states, sums, A, adjoint, n_segs):
    """Segment summaries -> segment entries, in place (see :func:`.ss2d_shared._carry_kernel`)."""
    _carry_kernel[p.carry_grid()](states, sums, A, p.dim, p.N, n_segs, **p.carry_flags(adjoint))


def ss2d_saved_like(x, delta, A, B, C, sm_count=None):
    """Empty tensors shaped as what :func:`ss2d_fwd` saves (for the custom op's fake implementation and the
    traffic model); ``sm_count`` overrides the device's."""
    return tuple(x.new_empty(shape, dtype=torch.float32) for shape in saved_shapes(LaunchPlan(x, A, sm_count)))


def ss2d_fwd(x, delta, A, B, C, D, delta_bias, delta_softplus):
    """Fused SS2D forward on channels-last operands: returns (y (batch, H, W, D) fp32, saved tensors).

    Saved: the reverse routes' state entering every chunk (batch, n_chunks, 2, D, N) and every route's state
    entering every segment (batch, n_segs, 4, D, N)."""
    x, delta, B, C = _prepare(x, delta, B, C)
    p = LaunchPlan(x, A)
    A, D, delta_bias, dummy = _params(A, D, delta_bias, x)
    dev = x.device
    two = p.n_segs > 1
    f32 = lambda *shape: torch.empty(*shape, device=dev, dtype=torch.float32)  # noqa: E731
    entry_shape, seg_shape = saved_shapes(p)
    entries = f32(*entry_shape)
    seg = f32(*seg_shape)  # segment summaries, then (after the carry) entries
    seg_decay = f32(p.batch, p.n_segs, 4, p.dim) if two else dummy  # decay sums of the segments
    seg_lo = f32(p.batch, p.n_segs, 2, p.dim) if two else dummy     # ... compensation of the reverse routes'

    scratch = f32(p.batch, p.n_segs, 2, p.dim, p.N) if p.N > 1 else dummy  # carried values (see _carried)
    y = f32(p.batch, p.H, p.W, p.dim)
    flags = dict(p.flags(delta_bias, delta_softplus), TWO_LEVEL=two)
    bias = delta_bias if delta_bias is not None else dummy
    common = (p.L, p.H, p.W, p.dim, p.N, p.n_chunks, p.cpp, p.n_segs,
              x.stride(0), delta.stride(0), delta.stride(2), delta.stride(3))
    Bs = (B.stride(0), B.stride(2), B.stride(3), B.stride(4))
    for pair in (0, 1):
        _fwd_summary_kernel[p.grid()](x, delta, A, B, bias, entries, seg, seg_decay, seg_lo, scratch, *common,
                                      *Bs,
                                      PAIR=pair, **flags)
    if two:
        _carry(p, seg, seg_decay, A, adjoint=False, n_segs=p.n_segs)
    for pair in (0, 1):
        _fwd_kernel[p.grid()](x, delta, A, B, C, D if D is not None else dummy, bias, entries, seg, seg_decay, seg_lo,
                              scratch, y,
                              *common, *Bs, C.stride(0), C.stride(2), C.stride(3), C.stride(4),
                              PAIR=pair, HAS_D=D is not None, **flags)
    return y, (entries, seg)


def ss2d_bwd(x, delta, A, B, C, D, delta_bias, delta_softplus, dy, saved):
    """Fused SS2D backward: (dx, ddelta, dA, dB, dC, dD, ddelta_bias) in the shapes/dtypes of the inputs."""
    entries, seg = saved
    x_in, delta_in, A_in, B_in, C_in, D_in, bias_in = x, delta, A, B, C, D, delta_bias
    x, delta, B, C = _prepare(x, delta, B, C)
    dy = _dense_hw(dy)
    p = LaunchPlan(x, A)
    A, D, delta_bias, dummy = _params(A, D, delta_bias, x)
    dev = x.device
    two = p.n_bsegs > 1
    work = {name: torch.empty(shape, device=dev, dtype=dtype)
            for name, (shape, dtype) in bwd_workspaces(p, B.dtype).items()}
    adj = work['adjoint_entries']
    adj_seg, adj_seg_decay, adj_seg_lo = (work.get(k, dummy) for k in ('segments', 'segment_decay', 'segment_lo'))
    scratch = work.get('scratch', dummy)
    bias = delta_bias if delta_bias is not None else dummy
    Cs = (C.stride(0), C.stride(2), C.stride(3), C.stride(4))
    for pair in (0, 1):
        _bwd_summary_kernel[p.grid(backward=True)](
            delta, A, C, bias, dy, adj, adj_seg, adj_seg_decay, adj_seg_lo, scratch, p.L, p.H, p.W, p.dim, p.N,
            p.n_chunks, p.bwd_cpp, p.n_bsegs, p.K, p.n_sc, p.n_qrows, delta.stride(0), delta.stride(2),
            delta.stride(3), *Cs, dy.stride(0), PAIR=pair, **p.summary_flags(delta_bias, delta_softplus))
    if two:
        _carry(p, adj_seg, adj_seg_decay, A, adjoint=True, n_segs=p.n_bsegs)
    dx = torch.empty(p.batch, p.H, p.W, p.dim, device=dev, dtype=x.dtype)
    ddelta = torch.empty(p.batch, p.H, p.W, 4, p.dim, device=dev, dtype=delta.dtype)
    # dB/dC sum over the channel blocks in fp32 buffers when there are several blocks and B/C are half
    dB, dC = (work[k] if k in work else torch.empty(B.shape, device=dev, dtype=B.dtype) for k in ('dB_sum', 'dC_sum'))
    pA, pD, pbias = work['partial_A'], work['partial_D'], work['partial_bias']
    for pair in (0, 1):
        _bwd_kernel[(p.n_bsegs, p.batch)](
            x, delta, A, B, C, D if D is not None else dummy, bias, dy, entries, seg, adj, adj_seg, adj_seg_decay,
            adj_seg_lo, scratch, work.get('entry_scratch', dummy), dx, ddelta, dB, dC, pA, pD, pbias,
            p.L, p.H, p.W, p.dim, p.N, p.n_chunks, p.bwd_cpp, p.bwd_blocks, p.n_bsegs, p.n_segs, p.fsegs_per_bseg,
            p.K, p.n_sc, p.n_qrows,
            x.stride(0), delta.stride(0), delta.stride(2), delta.stride(3),
            B.stride(0), B.stride(2), B.stride(3), B.stride(4), *Cs, dy.stride(0),
            PAIR=pair, HAS_D=D is not None, TWO_LEVEL=two, FWD_TWO_LEVEL=p.n_segs > 1,
            **p.flags(delta_bias, delta_softplus, backward=True))
    dA = pA.sum((0, 1)).flatten(0, 1)
    dD = None if D_in is None else pD.sum((0, 1)).repeat(4).to(D_in.dtype)
    dbias = None if bias_in is None else pbias.sum((0, 1)).flatten().to(bias_in.dtype)
    return (dx.to(x_in.dtype), ddelta.to(delta_in.dtype), dA.to(A_in.dtype), dB.to(B_in.dtype),
            dC.to(C_in.dtype), dD, dbias)
