"""Pure-PyTorch selective scan: the CPU fallback when numba is missing, and the reference the other backends'
tests compare against (the default for CPU tensors is the compiled :mod:`vmamba.ops.numba_backend`).

Why this shape of algorithm
---------------------------
The recurrence ``h_t = a_t * h_{t-1} + b_t`` (``a_t = exp(delta_t * A)``, ``b_t = delta_t * u_t * B_t``) is
sequential along L, but everything else is independent across batch, channels and states. A per-step Python
loop over L (the reference) pays one round of kernel launches per time step. Here L is cut into ``n_chunks``
chunks of ``T ~ sqrt(L)`` steps and laid out as ``(T, ..., n_chunks)``, so that:

1. one Python step advances *every* chunk of every sequence by one position (``T`` steps in all), giving the
   chunk-local states (started from zero) and the running product of decays inside each chunk;
2. the states entering each chunk come from a scan over the ``n_chunks`` chunk ends (a recursive call on a
   tensor ``T`` times smaller);
3. one broadcast multiply-add adds ``(decay product since chunk start) * (incoming state)`` to every position.

That is about ``2 * sqrt(L)`` vectorised steps instead of ``L``. It is numerically the plain recurrence: decays
are only ever *multiplied* (products of numbers in (0, 1] when ``A <= 0``), never divided or exponentiated
from a positive log-sum, so nothing overflows where the sequential loop does not.

The backward pass is explicit (no autograd graph through the loop): it recomputes the step sizes Δ and the states
from the inputs (the forward saves nothing), runs the same chunked scan in the other direction for ``dL/dh`` and forms
the seven gradients with broadcast products and sums. All sums are ordinary (deterministic) PyTorch reductions.
Any float dtype works; math runs in ``promote(input dtype, float32)``, so float64 inputs give a float64 scan
for gradcheck.

Operands live in one chunk layout ``(T, batch, R, G, Dg, N, n_chunks)``: R scan *directions* (forward, and for
SS2D also reversed), G channel groups sharing B/C, Dg channels per group, N states (size-1 axes broadcast).
The fused SS2D path needs no flipped copies: routes 2 and 3 are routes 0 and 1 scanned *backwards* in the same
row-major / column-major layout (G = 2 layouts), so the cross-merge is a plain sum.

Backend interface (shared with :mod:`.triton_backend` and :mod:`.numba_backend`, called by :mod:`.dispatch`):
``scan_fwd``/``scan_bwd`` for the plain op, ``ss2d_fwd``/``ss2d_bwd`` for the fused SS2D core on channels-last
operands.
"""
import math

import torch
import torch.nn.functional as F

__all__ = ['scan_fwd', 'scan_bwd', 'ss2d_fwd', 'ss2d_bwd', 'linear_scan']

#: Sequences no longer than this are scanned with a direct loop (the chunked layout would not pay off).
_DIRECT_MAX = 32


def _sqrt_chunk_len(length):
    """Chunk length T ~ sqrt(L): balances the T in-chunk steps against the n_chunks carry steps."""
    return max(1, math.isqrt(max(length - 1, 0)) + 1)


def _to_chunks(x, T, n_chunks, dtype=None, out=None):
    """(..., L) -> (T, ..., n_chunks) in one copy (casting to ``dtype``; into ``out`` if given), zero-padded.

    Zero padding is what makes the padded tail inert: with Δ = 0 the decay is exp(0) = 1 and the input 0, so a
    padded step is the identity whichever direction the scan runs.
    """
    length = x.shape[-1]
    if out is None:
        out = x.new_empty((T, *x.shape[:-1], n_chunks), dtype=dtype or x.dtype)
    view = out.movedim(0, -1)  # (..., n_chunks, T), a strided view of ``out``
    full = length // T
    if full:
        view[..., :full, :].copy_(x[..., :full * T].unflatten(-1, (full, T)))
    if full < n_chunks:
        rest = length - full * T
        view[..., full, :rest].copy_(x[..., full * T:])
        view[..., full, rest:].zero_()
    return out


def _from_chunks(x, length):
    """(T, ..., n_chunks) -> (..., L) view-then-slice: the inverse of :func:`_to_chunks` (copy on use)."""
    return x.movedim(0, -1).flatten(-2)[..., :length]


def _scan_chunked(a, b, reverse=False):
    """Scan ``h_t = a_t * h_{t-1} + b_t`` on tensors in chunk layout (T, ..., n_chunks). In place.

    With ``reverse=True`` the recurrence runs from the end: ``h_t = a_t * h_{t+1} + b_t``.
    Returns ``b`` overwritten with the states ``h``; ``a`` is overwritten with in-chunk decay products.
    """
    T = a.shape[0]
    steps = range(T - 2, -1, -1) if reverse else range(1, T)
    step = 1 if reverse else -1
    n_chunks = a.shape[-1]
    for t in steps:
        b[t].addcmul_(a[t], b[t + step])
        if n_chunks > 1:  # the decay products are only needed to carry states across chunks
            a[t].mul_(a[t + step])
    if n_chunks > 1:
        exit_ = 0 if reverse else T - 1  # the last position a chunk reaches in scan order
        ends = linear_scan(a[exit_].clone(), b[exit_].clone(), reverse=reverse)  # state after each chunk
        incoming = torch.zeros_like(ends)
        if reverse:
            incoming[..., :-1] = ends[..., 1:]
        else:
            incoming[..., 1:] = ends[..., :-1]
        b.addcmul_(a, incoming)
    return b


def linear_scan(a, b, reverse=False):
    """``h_t = a_t * h_{t-1} + b_t`` along the last dim of same-shape tensors (reverse: from the end).

    Overwrites ``a`` and ``b``; returns the states.
    """
    length = a.shape[-1]
    if length <= _DIRECT_MAX:
        steps = range(length - 2, -1, -1) if reverse else range(1, length)
        step = 1 if reverse else -1
        for t in steps:
            b[..., t].addcmul_(a[..., t], b[..., t + step])
        return b
    T = _sqrt_chunk_len(length)
    n_chunks = -(-length // T)
    h = _scan_chunked(_to_chunks(a, T, n_chunks), _to_chunks(b, T, n_chunks), reverse)
    return _from_chunks(h, length)


def _shift(x, step, fill):
    """Chunk-layout (T, ..., n_chunks) tensor moved by one sequence position, across chunk boundaries.

    ``step=+1``: out_t = x_{t+1} (``fill`` at the end); ``step=-1``: out_t = x_{t-1} (``fill`` at the start).
    """
    out = torch.empty_like(x)
    if step > 0:
        out[:-1] = x[1:]
        out[-1, ..., :-1] = x[0, ..., 1:]
        out[-1, ..., -1] = fill
    else:
        out[1:] = x[:-1]
        out[0, ..., 1:] = x[-1, ..., :-1]
        out[0, ..., 0] = fill
    return out


def _sum_to(x, dim):
    """Sum over a broadcast axis, keeping it; free when the axis has size 1 (d_state = 1, one channel a group)."""
    return x if x.shape[dim] == 1 else x.sum(dim, keepdim=True)


def _through_softplus(ddt, dt):
    """dL/d pre from dL/dΔ, Δ = softplus(pre): times sigmoid(pre) = 1 - exp(-Δ) = -expm1(-Δ) (accurate for
    small Δ). On the identity branch (pre > 20) this is 1 - 2e-9 instead of 1: equal in fp32, negligible in fp64."""
    return ddt.mul_(torch.neg(dt).expm1_()).neg_()


# ----------------------------------------------------------------------------------------------------------------
# The core, on chunk-layout operands: channel tensors (T, batch, R|1, G, Dg, 1, n), B/C (T, batch, R, G, 1, N, n),
# A (1, 1, R, G, Dg, N, 1). Direction r = 0 scans forward, r = 1 backward (h_t = a_t h_{t+1} + b_t).
# ----------------------------------------------------------------------------------------------------------------
def _scan_directions(decay, inp):
    """States for every direction, in place on ``inp`` (``decay`` is consumed)."""
    for r in range(decay.shape[2]):
        _scan_chunked(decay[:, :, r], inp[:, :, r], reverse=r == 1)
    return inp


def _core_fwd(dtc, uc, Bc, Cc, Ac):
    """y (T, batch, R, G, Dg, n) without the D skip."""
    h = _scan_directions(torch.mul(dtc, Ac).exp_(), torch.mul(dtc, uc).mul(Bc))
    return _sum_to(h.mul_(Cc), 5).squeeze(5)


def _core_bwd(dtc, uc, Bc, Cc, Ac, dyc):
    """(du, dΔ) (T, batch, R, G, Dg, n), dA (R, G, Dg, N), dB/dC (T, batch, R, G, N, n). du is per direction.

    With g_t = dL/dh_t and a_t = exp(Δ_t A), for a forward direction (backward: t-1 <-> t+1):
    g_t = C_t dy_t + a_{t+1} g_{t+1};  du_t = Δ_t <g_t, B_t>;  dΔ_t = u_t <g_t, B_t> + <g_t a_t h_{t-1}, A>;
    dA = Σ_t g_t a_t h_{t-1} Δ_t;  dB_t = Σ_channels g_t Δ_t u_t;  dC_t = Σ_channels h_t dy_t.
    """
    decay = torch.mul(dtc, Ac).exp_()
    dtu = dtc * uc
    h = _scan_directions(decay.clone(), dtu * Bc)
    g = torch.mul(Cc, dyc)
    g_ah = torch.empty_like(h)  # g_t * a_t * h_{t-1} = dL/d(Δ_t A)
    for r in range(decay.shape[2]):
        step = 1 if r == 0 else -1  # the step towards where the forward recurrence came from is -step
        _scan_chunked(_shift(decay[:, :, r], step, 1.0), g[:, :, r], reverse=r == 0)
        torch.mul(_shift(h[:, :, r], -step, 0.0), decay[:, :, r], out=g_ah[:, :, r])
    del decay
    g_ah.mul_(g)
    dC = (h.mul_(dyc)).sum(4)
    del h
    gB = _sum_to(g * Bc, 5)  # <g_t, B_t>
    dB = g.mul_(dtu).sum(4)
    dA = (g_ah * dtc).sum((0, 1, 6))
    ddt = torch.add(gB * uc, _sum_to(g_ah.mul_(Ac), 5)).squeeze(5)
    du = gB.mul_(dtc).squeeze(5)
    return du, ddt, dA, dB, dC


# ----------------------------------------------------------------------------------------------------------------
# plain scan: u/delta (batch, K*Dg, L), B/C (batch, K, N, L). R = 1, G = K.
# ----------------------------------------------------------------------------------------------------------------
class _PlainLayout:
    def __init__(self, u, B, A):
        batch, channels, self.length = u.shape
        groups, self.d_state = B.shape[1], A.shape[1]
        self.kd = (groups, channels // groups)
        self.dtype = torch.promote_types(u.dtype, torch.float32)
        self.T = _sqrt_chunk_len(self.length)
        self.n_chunks = -(-self.length // self.T)

    def channels(self, x):  # (batch, K*Dg, L) -> (T, batch, 1, K, Dg, 1, n)
        return _to_chunks(x, self.T, self.n_chunks, self.dtype).unflatten(2, self.kd)[:, :, None, ..., None, :]

    def groups(self, x):  # (batch, K, N, L) -> (T, batch, 1, K, 1, N, n)
        return _to_chunks(x, self.T, self.n_chunks, self.dtype)[:, :, None, :, None]

    def weight(self, A):  # (K*Dg, N) -> (1, 1, 1, K, Dg, N, 1)
        return A.to(self.dtype).reshape(1, 1, 1, *self.kd, self.d_state, 1)

    def back(self, x):  # (T, batch, 1, K, Dg, n) -> (batch, K*Dg, L), a strided view
        return _from_chunks(x[:, :, 0], self.length).flatten(1, 2)

    def back_groups(self, x):  # (T, batch, 1, K, N, n) -> (batch, K, N, L), a strided view
        return _from_chunks(x[:, :, 0], self.length)


def _discretise(delta, delta_bias, delta_softplus, dtype, bias_shape):
    """Δ = softplus(delta + bias) (identity above 20, like torch and the CUDA kernel), in ``dtype``."""
    pre = delta.to(dtype)
    if delta_bias is not None:
        pre = pre + delta_bias.to(dtype).view(bias_shape)
    return F.softplus(pre) if delta_softplus else pre


def scan_fwd(u, delta, A, B, C, D, delta_bias, delta_softplus, out_dtype):
    """Forward of the plain scan. Returns ``(y, ())``: the backward recomputes Δ (one element-wise pass)."""
    lay = _PlainLayout(u, B, A)
    with torch.autocast(u.device.type, enabled=False):
        dtc = lay.channels(_discretise(delta, delta_bias, delta_softplus, lay.dtype, (-1, 1)))
        y = lay.back(_core_fwd(dtc, lay.channels(u), lay.groups(B), lay.groups(C), lay.weight(A)))
        if D is not None:
            y = torch.addcmul(y, u.to(lay.dtype), D.to(lay.dtype)[:, None])
    return y.to(out_dtype), ()


def scan_bwd(u, delta, A, B, C, D, delta_bias, delta_softplus, dy, saved):
    """All seven gradients (du, ddelta, dA, dB, dC, dD, ddelta_bias) in the dtypes of their inputs."""
    lay = _PlainLayout(u, B, A)
    f = lay.dtype
    with torch.autocast(u.device.type, enabled=False):
        dtc = lay.channels(_discretise(delta, delta_bias, delta_softplus, lay.dtype, (-1, 1)))
        du, ddt, dA, dB, dC = _core_bwd(dtc, lay.channels(u), lay.groups(B), lay.groups(C), lay.weight(A),
                                        lay.channels(dy))
        du, ddt = lay.back(du), lay.back(ddt)
        dD = None
        if D is not None:
            dyf = dy.to(f)
            du = torch.addcmul(du, dyf, D.to(f)[:, None])
            dD = (dyf * u.to(f)).sum((0, 2)).to(D.dtype)
        if delta_softplus:
            ddt = _through_softplus(ddt.contiguous(), lay.back(dtc.squeeze(5)))
        dbias = None if delta_bias is None else ddt.sum((0, 2)).to(delta_bias.dtype)
    return (du.to(u.dtype), ddt.to(delta.dtype), dA.flatten(0, 2).to(A.dtype), lay.back_groups(dB).to(B.dtype),
            lay.back_groups(dC).to(C.dtype), dD, dbias)


# ----------------------------------------------------------------------------------------------------------------
# fused SS2D: x (batch, D, H, W); delta (batch, 4, D, H, W), B/C (batch, 4, N, H, W), route k = 2 r + g:
# layout g = 0 row-major (routes 0, 2), g = 1 column-major (routes 1, 3); direction r = 0 forward, 1 backward.
# ----------------------------------------------------------------------------------------------------------------
class _SS2DLayout:
    def __init__(self, x, A):
        self.batch, self.dim, self.H, self.W = x.shape
        self.length = self.H * self.W
        self.d_state = A.shape[1]
        self.dtype = torch.promote_types(x.dtype, torch.float32)
        self.T = _sqrt_chunk_len(self.length)
        self.n_chunks = -(-self.length // self.T)

    def _chunk_both(self, t, lead):
        """(..., H, W) maps -> (T, ..., 2 layouts, C, n): row-major and column-major sequences, one copy each."""
        out = t.new_empty((self.T, *lead, 2, t.shape[-3], self.n_chunks), dtype=self.dtype)
        _to_chunks(t.flatten(-2), self.T, self.n_chunks, out=out[..., 0, :, :])
        _to_chunks(t.transpose(-1, -2).flatten(-2), self.T, self.n_chunks, out=out[..., 1, :, :])
        return out

    def spatial(self, x):
        """(batch, D, H, W) -> (T, batch, 1, 2, D, 1, n): one copy per layout, shared by both directions."""
        return self._chunk_both(x, (self.batch,))[:, :, None, ..., None, :]

    def routes(self, t):
        """(batch, 4, C, H, W) per-route maps -> (T, batch, 2, 2, C, n), route k = 2 r + g in its layout."""
        out = t.new_empty((self.T, self.batch, 2, 2, t.shape[2], self.n_chunks), dtype=self.dtype)
        pairs = t.unflatten(1, (2, 2))  # (batch, r, g, C, H, W)
        _to_chunks(pairs[:, :, 0].flatten(-2), self.T, self.n_chunks, out=out[:, :, :, 0])
        _to_chunks(pairs[:, :, 1].transpose(-1, -2).flatten(-2), self.T, self.n_chunks, out=out[:, :, :, 1])
        return out

    def weight(self, A):  # (4*D, N) -> (1, 1, 2, 2, D, N, 1)
        return A.to(self.dtype).reshape(1, 1, 2, 2, self.dim, self.d_state, 1)

    def merge(self, yc):  # (T, batch, 2 layouts, C, n) -> (batch, C, H, W): row-major + column-major^T
        seq = _from_chunks(yc, self.length)  # (batch, 2, C, L)
        return seq[:, 0].unflatten(-1, (self.H, self.W)) + \
            seq[:, 1].unflatten(-1, (self.W, self.H)).transpose(-1, -2)

    def unroute(self, tc, out_dtype):  # (T, batch, 2, 2, C, n) -> (batch, 4, C, H, W)
        seq = _from_chunks(tc, self.length)  # (batch, r, g, C, L)
        out = torch.empty((self.batch, 2, 2, tc.shape[4], self.H, self.W), dtype=out_dtype, device=tc.device)
        out[:, :, 0] = seq[:, :, 0].unflatten(-1, (self.H, self.W))
        out[:, :, 1] = seq[:, :, 1].unflatten(-1, (self.W, self.H)).transpose(-1, -2)
        return out.flatten(1, 2)


def _ss2d_fwd(x, delta, A, B, C, D, delta_bias, delta_softplus):
    """Fused-op forward on (batch, D, H, W) maps: merged y in promote(x.dtype, fp32); saves nothing."""
    lay = _SS2DLayout(x, A)
    with torch.autocast(x.device.type, enabled=False):
        dtc = _discretise_routes(lay, delta, delta_bias, delta_softplus)
        yc = _core_fwd(dtc, lay.spatial(x), lay.routes(B)[:, :, :, :, None], lay.routes(C)[:, :, :, :, None],
                       lay.weight(A))
        y = lay.merge(yc.sum(2))
        if D is not None:
            y = torch.addcmul(y, x.to(lay.dtype), D.to(lay.dtype).view(4, -1).sum(0)[:, None, None])
    return y, ()


def _discretise_routes(lay, delta, delta_bias, delta_softplus):
    """Δ of every route in chunk layout (T, batch, 2, 2, D, 1, n)."""
    dt = _discretise(delta, delta_bias, delta_softplus, lay.dtype, (1, 4, -1, 1, 1))
    return lay.routes(dt)[..., None, :]


def _ss2d_bwd(x, delta, A, B, C, D, delta_bias, delta_softplus, dy, saved):
    """Fused-op backward on (batch, D, H, W) maps: (dx, ddelta, dA, dB, dC, dD, ddelta_bias)."""
    lay = _SS2DLayout(x, A)
    f = lay.dtype
    with torch.autocast(x.device.type, enabled=False):
        dtc = _discretise_routes(lay, delta, delta_bias, delta_softplus)
        du, ddt, dA, dB, dC = _core_bwd(dtc, lay.spatial(x), lay.routes(B)[:, :, :, :, None],
                                        lay.routes(C)[:, :, :, :, None], lay.weight(A), lay.spatial(dy))
        dx = lay.merge(du.sum(2))
        dD = None
        if D is not None:
            dyf = dy.to(f)
            dx = torch.addcmul(dx, dyf, D.to(f).view(4, -1).sum(0)[:, None, None])
            dD = (dyf * x.to(f)).sum((0, 2, 3)).repeat(4).to(D.dtype)
        if delta_softplus:
            ddt = _through_softplus(ddt, dtc.squeeze(5))
        ddelta = lay.unroute(ddt, f)
        dbias = None if delta_bias is None else ddelta.sum((0, 3, 4)).flatten().to(delta_bias.dtype)
    return (dx.to(x.dtype), ddelta.to(delta.dtype), dA.flatten(0, 2).to(A.dtype), lay.unroute(dB, B.dtype),
            lay.unroute(dC, C.dtype), dD, dbias)


# The public fused-op interface is channels-last (see :mod:`.dispatch`); this backend's chunk layout is built
# from channel-first views, which the copies into chunks read directly (the permutes below are views).
def _channels_first(x, delta, B, C):
    return x.permute(0, 3, 1, 2), delta.permute(0, 3, 4, 1, 2), B.permute(0, 3, 4, 1, 2), C.permute(0, 3, 4, 1, 2)


def ss2d_fwd(x, delta, A, B, C, D, delta_bias, delta_softplus):
    """Fused-op forward: x (batch, H, W, D), delta (batch, H, W, 4, D), B/C (batch, H, W, 4, N) -> y
    (batch, H, W, D) in promote(x.dtype, fp32)."""
    x, delta, B, C = _channels_first(x, delta, B, C)
    y, saved = _ss2d_fwd(x, delta, A, B, C, D, delta_bias, delta_softplus)
    return y.permute(0, 2, 3, 1), saved


def ss2d_bwd(x, delta, A, B, C, D, delta_bias, delta_softplus, dy, saved):
    """Fused-op backward: (dx, ddelta, dA, dB, dC, dD, ddelta_bias) in the shapes and dtypes of the inputs."""
    x, delta, B, C = _channels_first(x, delta, B, C)
    dx, ddelta, dA, dB, dC, dD, dbias = _ss2d_bwd(x, delta, A, B, C, D, delta_bias, delta_softplus,
                                                  dy.permute(0, 3, 1, 2), saved)
    to_last = lambda t: t.permute(0, 3, 4, 1, 2)  # noqa: E731  (batch, 4, C, H, W) -> (batch, H, W, 4, C)
    return dx.permute(0, 2, 3, 1), to_last(ddelta), dA, to_last(dB), to_last(dC), dD, dbias
