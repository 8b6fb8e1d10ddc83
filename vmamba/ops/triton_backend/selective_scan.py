"""Triton kernels and launchers of the plain op (:func:`vmamba.ops.selective_scan`, official layout u/delta
(batch, K*D, L), B/C (batch, K, N, L)).

Design
------
* One program owns one batch element and a block of ``BD`` channels (always inside one B/C group, so the
  ``(BN, BL)`` tiles of B and C are loaded once and broadcast over the block). It walks the sequence in *spans*
  of ``BL`` positions (:func:`.plan.block_config`): coalesced loads along L, an fp32 ``tl.associative_scan`` over
  ``(decay, input)`` pairs on a ``(BD, BN, BL)`` register tile whose positions lie across the lanes (unlike the
  SS2D tiles, whose positions stay in one thread), and the fp32 state of the previous span carried in registers.
* Forward stores only the state at each span end (``(batch, channels, n_spans, N)`` fp32, tiny). The backward
  walks the spans in reverse, recomputes the span's states from the stored entering state, runs the reverse
  scan for dL/dh (decay shifted by one step: loaded from position l + 1), and forms every gradient in registers.
* Deterministic backward, no atomics: dA, dD and d(delta_bias) are summed per program and written per
  (batch, channel), dB/dC per (batch, channel block, position); the remaining sums are ``torch.sum``.
* Padded positions (past L) get Δ = 0 *after* bias and softplus, i.e. decay 1 and input 0: the identity.
* Everything loaded is upcast to fp32 at once (the interpreter cannot do bf16 arithmetic) and softplus avoids
  ``log1p`` (absent from the interpreter).

The model calls only the fused SS2D op; this module shares nothing with the SS2D modules but the plan.
"""
import torch
import triton
import triton.language as tl

from .plan import block_config, plain_min_programs

__all__ = ['scan_fwd', 'scan_bwd', 'scan_saved_like']


# ----------------------------------------------------------------------------------------------------------------
# jit helpers
# ----------------------------------------------------------------------------------------------------------------
@triton.jit
def _combine(a1, b1, a2, b2):
    """(a1, b1) then (a2, b2): the affine maps h -> a h + b composed; the scan of h_t = a_t h_{t-1} + b_t."""
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _softplus(x):
    """log(1 + e^x), identity above 20 (torch/CUDA threshold). log1p via log(w) * z / (w - 1), w = 1 + z,
    which stays accurate where 1 + e^x rounds to 1 (the interpreter has no log1p)."""
    z = tl.exp(tl.minimum(x, 20.0))
    w = 1.0 + z
    lp = tl.where(w == 1.0, z, tl.log(w) * (z / tl.where(w == 1.0, 1.0, w - 1.0)))
    return tl.where(x <= 20.0, lp, x)


@triton.jit
def _discretise(dl, bias, mask, SOFTPLUS: tl.constexpr):
    """(pre, Δ): pre = delta + bias; Δ = softplus(pre) (optional) and 0 where masked (the identity step)."""
    pre = dl + bias[:, None]
    dt = pre
    if SOFTPLUS:
        dt = _softplus(pre)
    return pre, tl.where(mask, dt, 0.0)


@triton.jit
def _fwd_walk(u_ptr, dl_ptr, B_ptr, C_ptr, y_ptr, st_ptr, A, Dv, bias,
              su, sdl, sB, sy, st_d, st_c, L, n_spans, mask_d, mask_n, HAS_D: tl.constexpr, SOFTPLUS: tl.constexpr,
              STORE_STATES: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr, BL: tl.constexpr):
    """Scan one sequence for a block of BD channels; pointers are at the block's first channel.

    su/sdl/sy: channel strides of u/delta/y; sB: state stride of B and C; st_d/st_c: channel/span strides of the
    span-end state buffer.
    """
    offs_d = tl.arange(0, BD)
    offs_n = tl.arange(0, BN)
    offs_l = tl.arange(0, BL)
    h = tl.zeros([BD, BN], dtype=tl.float32)
    for c in range(n_spans):
        l = c * BL + offs_l
        ml = l < L
        s = l
        m2 = mask_d[:, None] & ml[None, :]
        mb = mask_n[:, None] & ml[None, :]
        u = tl.load(u_ptr + offs_d[:, None] * su + s[None, :], mask=m2, other=0.0).to(tl.float32)
        dl = tl.load(dl_ptr + offs_d[:, None] * sdl + s[None, :], mask=m2, other=0.0).to(tl.float32)
        Bt = tl.load(B_ptr + offs_n[:, None] * sB + s[None, :], mask=mb, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + offs_n[:, None] * sB + s[None, :], mask=mb, other=0.0).to(tl.float32)
        _, dt = _discretise(dl, bias, m2, SOFTPLUS)
        decay = tl.exp(dt[:, None, :] * A[:, :, None])
        inp = (dt * u)[:, None, :] * Bt[None, :, :]
        decay, hs = tl.associative_scan((decay, inp), 2, _combine)
        hs = hs + decay * h[:, :, None]  # add the state carried in from the previous span
        y = tl.sum(hs * Ct[None, :, :], axis=1)
        if HAS_D:
            y += Dv[:, None] * u
        h = tl.sum(tl.where((offs_l == BL - 1)[None, None, :], hs, 0.0), axis=2)
        if STORE_STATES:
            tl.store(st_ptr + offs_d[:, None] * st_d + c * st_c + offs_n[None, :], h,
                     mask=mask_d[:, None] & mask_n[None, :])
        tl.store(y_ptr + offs_d[:, None] * sy + s[None, :], y.to(y_ptr.dtype.element_ty), mask=m2)


@triton.jit
def _bwd_walk(u_ptr, dl_ptr, B_ptr, C_ptr, dy_ptr, st_ptr, du_ptr, ddl_ptr, dB_ptr, dC_ptr,
              A, Dv, bias, su, sdl, sB, sdy, sdu, sddl, sdB, st_d, st_c, L, n_spans,
              mask_d, mask_n, HAS_D: tl.constexpr, SOFTPLUS: tl.constexpr,
              BD: tl.constexpr, BN: tl.constexpr, BL: tl.constexpr):
    """Backward of :func:`_fwd_walk` for one channel block, spans in reverse order.

    Writes du, d delta, and this block's partial sums of dB/dC per position;
    returns the block's partial sums (dA (BD, BN), dD (BD,), d delta_bias (BD,)) for the caller to store.
    """
    offs_d = tl.arange(0, BD)
    offs_n = tl.arange(0, BN)
    offs_l = tl.arange(0, BL)
    mask_dn = mask_d[:, None] & mask_n[None, :]
    g = tl.zeros([BD, BN], dtype=tl.float32)  # dL/dh at the first position of the span to the right
    dA = tl.zeros([BD, BN], dtype=tl.float32)
    dD = tl.zeros([BD], dtype=tl.float32)
    dbias = tl.zeros([BD], dtype=tl.float32)
    for i in range(n_spans):
        c = n_spans - 1 - i
        l = c * BL + offs_l
        ml = l < L
        mln = (l + 1) < L
        s = l
        s_next = l + 1
        m2 = mask_d[:, None] & ml[None, :]
        m2n = mask_d[:, None] & mln[None, :]
        mb = mask_n[:, None] & ml[None, :]
        u = tl.load(u_ptr + offs_d[:, None] * su + s[None, :], mask=m2, other=0.0).to(tl.float32)
        dl = tl.load(dl_ptr + offs_d[:, None] * sdl + s[None, :], mask=m2, other=0.0).to(tl.float32)
        dl_next = tl.load(dl_ptr + offs_d[:, None] * sdl + s_next[None, :], mask=m2n, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + offs_d[:, None] * sdy + s[None, :], mask=m2, other=0.0).to(tl.float32)
        Bt = tl.load(B_ptr + offs_n[:, None] * sB + s[None, :], mask=mb, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + offs_n[:, None] * sB + s[None, :], mask=mb, other=0.0).to(tl.float32)
        pre, dt = _discretise(dl, bias, m2, SOFTPLUS)
        _, dt_next = _discretise(dl_next, bias, m2n, SOFTPLUS)

        # Recompute this span's states from the state stored at the end of the previous span.
        h_in = tl.load(st_ptr + offs_d[:, None] * st_d + (c - 1) * st_c + offs_n[None, :],
                       mask=mask_dn & (c > 0), other=0.0)
        dtu = dt * u
        inp = dtu[:, None, :] * Bt[None, :, :]
        decay, hs = tl.associative_scan((tl.exp(dt[:, None, :] * A[:, :, None]), inp), 2, _combine)
        hs = hs + decay * h_in[:, :, None]

        # dL/dh_t = C_t dy_t + a_{t+1} dL/dh_{t+1}, scanned from the right, plus the carry from the next span.
        decay_next = tl.exp(dt_next[:, None, :] * A[:, :, None])
        gsum, G = tl.associative_scan((decay_next, Ct[None, :, :] * dy[:, None, :]), 2, _combine, reverse=True)
        G = G + gsum * g[:, :, None]
        g = tl.sum(tl.where((offs_l == 0)[None, None, :], G, 0.0), axis=2)

        ah = hs - inp  # a_t * h_{t-1}
        Gah = G * ah
        gB = tl.sum(G * Bt[None, :, :], axis=1)
        ddt = gB * u + tl.sum(Gah * A[:, :, None], axis=1)
        du = gB * dt
        dA += tl.sum(Gah * dt[:, None, :], axis=2)
        if HAS_D:
            du += Dv[:, None] * dy
            dD += tl.sum(dy * u, axis=1)
        dpre = ddt
        if SOFTPLUS:
            dpre = tl.where(pre <= 20.0, ddt * tl.sigmoid(pre), ddt)
        dpre = tl.where(m2, dpre, 0.0)
        dbias += tl.sum(dpre, axis=1)

        tl.store(ddl_ptr + offs_d[:, None] * sddl + s[None, :], dpre.to(ddl_ptr.dtype.element_ty), mask=m2)
        tl.store(du_ptr + offs_d[:, None] * sdu + s[None, :], du.to(du_ptr.dtype.element_ty), mask=m2)
        tl.store(dB_ptr + offs_n[:, None] * sdB + s[None, :], tl.sum(G * dtu[:, None, :], axis=0), mask=mb)
        tl.store(dC_ptr + offs_n[:, None] * sdB + s[None, :], tl.sum(hs * dy[:, None, :], axis=0), mask=mb)
    return dA, dD, dbias


@triton.jit
def _load_params(A_ptr, D_ptr, bias_ptr, ch, N, mask_d, mask_n, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
                 BN: tl.constexpr):
    """A (BD, BN), D (BD,), delta_bias (BD,) for channels ``ch`` (zeros where absent/masked)."""
    offs_n = tl.arange(0, BN)
    A = tl.load(A_ptr + ch[:, None] * N + offs_n[None, :], mask=mask_d[:, None] & mask_n[None, :], other=0.0)
    Dv = tl.zeros(ch.shape, dtype=tl.float32)
    bias = tl.zeros(ch.shape, dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + ch, mask=mask_d, other=0.0)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + ch, mask=mask_d, other=0.0)
    return A.to(tl.float32), Dv.to(tl.float32), bias.to(tl.float32)


# ----------------------------------------------------------------------------------------------------------------
# kernels: plain scan. u/delta/y (batch, K*D, L), B/C (batch, K, N, L); grid (channel blocks, batch).
# ----------------------------------------------------------------------------------------------------------------
@triton.jit
def _scan_fwd_kernel(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, y_ptr, st_ptr,
                     channels, group_channels, L, N, n_spans,
                     HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                     BD: tl.constexpr, BN: tl.constexpr, BL: tl.constexpr):
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    ch = pid_d * BD + tl.arange(0, BD)
    mask_d = ch < channels
    mask_n = tl.arange(0, BN) < N
    k = (pid_d * BD) // group_channels
    A, Dv, bias = _load_params(A_ptr, D_ptr, bias_ptr, ch, N, mask_d, mask_n, HAS_D, HAS_BIAS, BN)
    row = (b * channels + pid_d * BD) * L  # offset of (b, first channel of the block, 0)
    groups = channels // group_channels
    bc = (b * groups + k) * N * L
    _fwd_walk(u_ptr + row, dl_ptr + row, B_ptr + bc, C_ptr + bc, y_ptr + row,
              st_ptr + (b * channels + pid_d * BD) * n_spans * N, A, Dv, bias,
              L, L, L, L, n_spans * N, N, L, n_spans, mask_d, mask_n,
              HAS_D=HAS_D, SOFTPLUS=SOFTPLUS, STORE_STATES=True, BD=BD, BN=BN, BL=BL)


@triton.jit
def _scan_bwd_kernel(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, dy_ptr, st_ptr,
                     du_ptr, ddl_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
                     channels, group_channels, L, N, n_spans,
                     HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                     BD: tl.constexpr, BN: tl.constexpr, BL: tl.constexpr):
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    ch = pid_d * BD + tl.arange(0, BD)
    mask_d = ch < channels
    mask_n = tl.arange(0, BN) < N
    k = (pid_d * BD) // group_channels
    j = (pid_d * BD - k * group_channels) // BD  # block index inside the group
    blocks_per_group = group_channels // BD
    A, Dv, bias = _load_params(A_ptr, D_ptr, bias_ptr, ch, N, mask_d, mask_n, HAS_D, HAS_BIAS, BN)
    row = (b * channels + pid_d * BD) * L
    groups = channels // group_channels
    bc = (b * groups + k) * N * L
    # dB/dC workspace (batch, blocks_per_group, K, N, L): this block's partial sums over its channels.
    ws = ((b * blocks_per_group + j) * groups + k) * N * L
    dA, dD, dbias = _bwd_walk(u_ptr + row, dl_ptr + row, B_ptr + bc, C_ptr + bc, dy_ptr + row,
                              st_ptr + (b * channels + pid_d * BD) * n_spans * N,
                              du_ptr + row, ddl_ptr + row, dB_ptr + ws, dC_ptr + ws,
                              A, Dv, bias, L, L, L, L, L, L, L, n_spans * N, N, L, n_spans,
                              mask_d, mask_n, HAS_D=HAS_D, SOFTPLUS=SOFTPLUS, BD=BD, BN=BN, BL=BL)
    # Per-(batch, channel) partials; the sum over the batch happens on the host in a fixed order.
    offs_n = tl.arange(0, BN)
    tl.store(dA_ptr + (b * channels + ch[:, None]) * N + offs_n[None, :], dA, mask=mask_d[:, None] & mask_n[None, :])
    tl.store(dD_ptr + b * channels + ch, dD, mask=mask_d)
    tl.store(dbias_ptr + b * channels + ch, dbias, mask=mask_d)


# ----------------------------------------------------------------------------------------------------------------
# host side (re-exported by the package, the backend interface)
# ----------------------------------------------------------------------------------------------------------------
def _prepare(*tensors):
    out = []
    for t in tensors:
        if t is not None and t.dtype == torch.float64:
            raise TypeError("The triton selective-scan backend computes in float32; use backend='torch' for "
                            'float64 inputs (e.g. gradcheck).')
        out.append(None if t is None else t.contiguous())
    return out


def _params(A, D, delta_bias):
    f32 = lambda t: None if t is None else t.detach().to(torch.float32).contiguous()  # noqa: E731
    return f32(A), f32(D), f32(delta_bias)


def _dummy(ref):
    return torch.empty(1, device=ref.device, dtype=torch.float32)


def scan_saved_like(u, delta, A, B, C):
    """Empty tensors shaped as what :func:`scan_fwd` saves (for the custom op's fake implementation)."""
    batch, channels, L = u.shape
    groups, N = B.shape[1], A.shape[1]
    BL = block_config(L, N, channels // groups, batch * channels, plain_min_programs(u.device))[1]
    return (u.new_empty((batch, channels, triton.cdiv(L, BL), N), dtype=torch.float32),)


def scan_fwd(u, delta, A, B, C, D, delta_bias, delta_softplus, out_dtype):
    """Plain scan forward. Returns (y, (span_end_states,))."""
    u, delta, B, C = _prepare(u, delta, B, C)
    A, D, delta_bias = _params(A, D, delta_bias)
    batch, channels, L = u.shape
    groups, N = B.shape[1], A.shape[1]
    BN, BL, BD, _, _ = block_config(L, N, channels // groups, batch * channels, plain_min_programs(u.device))
    n_spans = triton.cdiv(L, BL)
    y = torch.empty(batch, channels, L, device=u.device, dtype=out_dtype)
    states = torch.empty(batch, channels, n_spans, N, device=u.device, dtype=torch.float32)
    _scan_fwd_kernel[(channels // BD, batch)](
        u, delta, A, B, C, D if D is not None else _dummy(u), delta_bias if delta_bias is not None else _dummy(u),
        y, states, channels, channels // groups, L, N, n_spans,
        HAS_D=D is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus),
        BD=BD, BN=BN, BL=BL, num_warps=4)
    return y, (states,)


def scan_bwd(u, delta, A, B, C, D, delta_bias, delta_softplus, dy, saved):
    """Plain scan backward: (du, ddelta, dA, dB, dC, dD, ddelta_bias), deterministic."""
    (states,) = saved
    u_in, delta_in, A_in, B_in, D_in, bias_in = u, delta, A, B, D, delta_bias
    u, delta, B, C, dy = _prepare(u, delta, B, C, dy)
    A, D, delta_bias = _params(A, D, delta_bias)
    batch, channels, L = u.shape
    groups, N = B.shape[1], A.shape[1]
    group_channels = channels // groups
    BN, BL, _, BD, warps = block_config(L, N, group_channels, batch * channels, plain_min_programs(u.device))
    n_spans = triton.cdiv(L, BL)
    blocks_per_group = group_channels // BD
    dev = u.device
    du = torch.empty_like(u)
    ddelta = torch.empty_like(delta)
    dA = torch.empty(batch, channels, N, device=dev, dtype=torch.float32)
    dD = torch.empty(batch, channels, device=dev, dtype=torch.float32)
    dbias = torch.empty(batch, channels, device=dev, dtype=torch.float32)
    dB = torch.empty(batch, blocks_per_group, groups, N, L, device=dev, dtype=torch.float32)
    dC = torch.empty_like(dB)
    _scan_bwd_kernel[(channels // BD, batch)](
        u, delta, A, B, C, D if D is not None else _dummy(u), delta_bias if delta_bias is not None else _dummy(u),
        dy, states, du, ddelta, dA, dB, dC, dD, dbias, channels, group_channels, L, N, n_spans,
        HAS_D=D is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus),
        BD=BD, BN=BN, BL=BL, num_warps=warps)
    return (du.to(u_in.dtype), ddelta.to(delta_in.dtype), dA.sum(0).to(A_in.dtype),
            dB.sum(1).to(B_in.dtype), dC.sum(1).to(C.dtype),
            None if D_in is None else dD.sum(0).to(D_in.dtype),
            None if bias_in is None else dbias.sum(0).to(bias_in.dtype))
