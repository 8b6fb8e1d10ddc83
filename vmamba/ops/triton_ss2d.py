"""Triton kernels of the fused SS2D op (v2): channels-last operands, route pairs, chunk-parallel scans.

Operands (all channels-last, the channel or state axis innermost with stride 1)::

    x      (batch, H, W, D)         the depthwise-conv output, read by all four routes; (H, W, D) dense (any
                                    batch stride), as that conv's channels_last output is, else copied once
    delta  (batch, H, W, 4, D)      route k's step size before bias/softplus
    B, C   (batch, H, W, 4, N)      may be strided views of the x_proj output (no copy needed)
    y      (batch, H, W, D) fp32    the merged output of the four routes; dy like x (copied if not dense)

Design
------
* **Route pairs.** Routes 0 and 2 walk the row-major sequence in opposite directions, routes 1 and 3 the
  column-major one. A program owns one *pair* on a chunk of ``BT`` consecutive positions of its sequence and
  a block of ``BD`` channels, loads each operand tile ``[BT, BD]`` once, and computes both routes on it: the
  forward route scans the tile top-down, the reverse route bottom-up, and their outputs add in registers.
* **Channels across lanes, the sequence inside a thread.** A tile's channel axis spans the warp's lanes
  (``VEC`` contiguous channels per thread, so every load and store is one vector per position), its ``BT``
  positions all live in the same thread: ``tl.associative_scan`` along the positions is then a sequential
  recurrence in registers (no shuffles, no shared memory), and folding a carried state into the first/last row
  or reading the chunk-end state are register picks. Every position of every route is a contiguous vector of
  channels, whatever the route's direction.
* **Segments walked sequentially, a carry pass between them.** Each pair's sequence is cut into segments of
  ``cpp`` chunks, one program per (segment, channel block, image), as many as fill the device (one segment per
  sequence when the batch alone fills it; a batch of one or two detection images, L ~ 67,000, gets as many
  programs as batch 128 at 224^2). A program walks its chunks in order and carries the state of the route that
  runs its way in registers from chunk to chunk, so that route needs no stored chunk states at all. The other
  route needs the state entering each chunk from the far side: a summary launch walks the segment the other way
  first and stores it (from a zero start at the segment's end). With several segments, the summary launch also
  writes each segment's summary (decay sum, end state from a zero start) for both routes, a carry kernel turns
  them into segment entry states (sequentially over segments, ``CB`` per memory round trip), and the main
  launch starts the carried route from its segment entry and makes every stored entry exact with one
  multiply-add: E += exp(A * sum(delta below the chunk)) * E_segment. The decay sum below a chunk is the
  segment's total minus the running sum above it, both compensated (:func:`_sum_add`), so no per-chunk array of
  decay sums is needed. The forward saves only the reverse routes' chunk entries and all routes' segment
  entries.
* **Carried values** (:func:`_carried`) live in registers for N = 1; for larger N (N registers per channel and
  value would spill) in a per-program scratch row, read and written state by state.
* **The merge.** The row-pair programs write y; the column-pair launch, ordered after it, adds its two routes
  to y. No atomics, and the sum order is fixed: y = ((D x + y_0 + y_2) + y_1 + y_3) bit for bit on every run.
* **Backward.** The same structure for the adjoint ``q = a * dL/dh`` (which obeys the same kind of recurrence
  as the state, so the decay sums serve its carry): a summary launch walks each segment bottom-up for the
  forward route's adjoint entries (and, with several segments, both routes' adjoint segment summaries), a carry
  over segments, then one main kernel per pair that walks top-down carrying the forward route's state (from the
  forward's segment entries: a backward segment is a whole number of forward segments) and the reverse route's
  adjoint, reads the reverse route's saved state entries and the forward route's adjoint entries, and forms
  every gradient in registers. For N > 1 the forward route's adjoint entries are stored once per *superchunk*
  of K chunks (:func:`superchunk`; N times larger per chunk, they would be 1.4x the op's inputs for vanilla
  stage 1) and the main kernel recomputes the K entries at the top of each superchunk into a per-program scratch
  (:func:`_adjoint_entries`). The main kernel loops over the channel blocks itself, so dB and dC are summed
  over channels inside the program (no workspace that grows with channel blocks x N x L); dx of the column pair
  is added to the row pair's. dA, dD and d(delta_bias) are summed per program and reduced on the host in a
  fixed order. Deterministic, no atomics.
* **Numerics.** Everything is upcast to fp32 at load; states and sums are fp32. softplus is
  max(x, 0) + log(1 + e^-|x|), exact to fp32 round-off without ``log1p`` (absent from the interpreter): a
  series below e^-|x| = 1/16, log2 above; above 20 it rounds to x, torch's identity there, with no select. The
  adjoint scan uses the shifted decay a(l+1) without loading the next position: its combine carries the
  segment's first decay (:func:`_adjoint_combine`). Padded positions (past L, or channels past D) are the
  identity step: zero inputs, and delta loaded as -inf, which softplus maps to Δ = 0 exactly (and its slope
  exp(x - softplus(x)) to 0), so no per-element select is needed (without softplus, Δ is zeroed by a select).

What remains of host-side work: ``dB``/``dC`` are written in B's dtype directly, except for half-precision B/C
with several backward channel blocks, which are summed over the blocks in fp32 buffers and cast once; dx of a
half-precision x is rounded to x's dtype once per pair (two roundings, where the official cross-merge rounds
at each of its three additions); the per-program dA/dD/d(delta_bias) partials are summed with ``torch.sum``.
"""
import os

import torch
import triton
import triton.language as tl

try:
    from triton import knobs
    _INTERPRET = bool(knobs.runtime.interpret)
except ImportError:  # triton < 3.3
    _INTERPRET = os.environ.get('TRITON_INTERPRET', '0') == '1'

LOG2E = 1.4426950408889634
_LOG2E = tl.constexpr(LOG2E)
_LN2 = tl.constexpr(0.6931471805599453)

__all__ = ['ss2d_fwd', 'ss2d_bwd', 'ss2d_saved_like', 'bwd_workspaces', 'meta_plan', 'segments', 'tile_config',
           'FWD_KERNELS', 'BWD_KERNELS']


# ---------------------------------------------------------------------------------------------------- helpers
if _INTERPRET:  # numpy has no approximate units; the interpreter runs the same maths exactly
    @triton.jit
    def _exp2(x):
        return tl.exp2(x)

    @triton.jit
    def _log2(x):
        return tl.log2(x)
else:  # one MUFU instruction each (tl.exp/tl.log lower to ~5 / ~15 instructions with denormal handling)
    @triton.jit
    def _exp2(x):
        return tl.inline_asm_elementwise('ex2.approx.ftz.f32 $0, $1;', '=f,f', [x], dtype=tl.float32,
                                         is_pure=True, pack=1)

    @triton.jit
    def _log2(x):
        return tl.inline_asm_elementwise('lg2.approx.ftz.f32 $0, $1;', '=f,f', [x], dtype=tl.float32,
                                         is_pure=True, pack=1)


@triton.jit
def _affine_combine(a1, b1, a2, b2):
    """(a1, b1) then (a2, b2): affine maps h -> a h + b composed; scans h_t = a_t h_{t-1} + b_t."""
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _adjoint_combine(p1, g1, f1, p2, g2, f2):
    """Segments of the adjoint recurrence g_l = c_l + a_{l+1} g_{l+1} (or its mirror), element = (1, c_l, a_l).

    A segment maps q = a * g at the position just past its far end to g at its near end: g = G + P q; F is the
    decay of the segment's near-end position. (p1, g1, f1) is the segment already scanned (the far side),
    (p2, g2, f2) the one being added on the near side.
    """
    return p2 * f1 * p1, g2 + p2 * f1 * g1, f2


#: Reverse scans as flip -> scan -> flip on the GPU: register renaming for in-thread rows, where Triton's
#: ``reverse=True`` lowering emits 640 warp shuffles per [8, 128] tile (seen in the PTX). The interpreter takes
#: ``reverse=True`` instead (its tl.flip costs ~1.5 s per call).
_FLIP = tl.constexpr(not _INTERPRET)


@triton.jit
def _scan_states(a, b, REVERSE: tl.constexpr):
    """h_l = a_l h_{l-1} + b_l down the rows of a [BT, BD] tile (bottom-up, h_l = a_l h_{l+1} + b_l, if REVERSE)."""
    if REVERSE and _FLIP:
        _, h = tl.associative_scan((tl.flip(a, 0), tl.flip(b, 0)), 0, _affine_combine)
        h = tl.flip(h, 0)
    else:
        _, h = tl.associative_scan((a, b), 0, _affine_combine, reverse=REVERSE)
    return h


@triton.jit
def _scan_adjoint(c, a, REVERSE: tl.constexpr):
    """g_l = c_l + a_{l+1} g_{l+1} up the rows (REVERSE: the adjoint of a top-down route) or its mirror
    g_l = c_l + a_{l-1} g_{l-1} down the rows, without a shifted load of a (see :func:`_adjoint_combine`)."""
    one = tl.full(a.shape, 1.0, tl.float32)
    if REVERSE and _FLIP:
        _, g, _ = tl.associative_scan((one, tl.flip(c, 0), tl.flip(a, 0)), 0, _adjoint_combine)
        g = tl.flip(g, 0)
    else:
        _, g, _ = tl.associative_scan((one, c, a), 0, _adjoint_combine, reverse=REVERSE)
    return g


@triton.jit
def _softplus(x):
    """log(1 + e^x) = max(x, 0) + log(1 + e^-|x|) to fp32 round-off; no select for torch's threshold (above 20
    the second term is under half an ulp of x, so the sum rounds to x exactly, as torch's identity there), and
    -inf (masked positions) gives 0. No log1p needed: a series below e^-|x| = 1/16 (where log(1 + w) would
    lose digits), log2 above."""
    w = _exp2(-tl.abs(x) * _LOG2E)
    series = w * (1.0 - w * (0.5 - w * (0.33333334 - w * (0.25 - w * 0.2))))
    return tl.maximum(x, 0.0) + tl.where(w < 0.0625, series, _log2(1.0 + w) * _LN2)


@triton.jit
def _rows(c, L, H, W, BT: tl.constexpr, PAIR: tl.constexpr, WRAP: tl.constexpr):
    """Flat spatial index h*W + w of the BT positions of chunk c of the pair's sequence, and their validity.

    Row pair: position l itself. Column pair: l = w*H + h, computed from the chunk start with one division per
    chunk. When H is a multiple of BT (not WRAP) every chunk lies inside one column, so its positions, and every
    operand's addresses, are affine in the row (s = s0 + t*W); otherwise rows wrap into the next column at most
    once when H >= BT, and tiny maps take the general path.
    """
    t = tl.arange(0, BT)
    l = c * BT + t
    valid = l < L
    if PAIR == 0:
        s = l
    else:
        w0 = (c * BT) // H
        h = c * BT - w0 * H + t
        if not WRAP:
            s = h * W + w0
        elif H >= BT:
            wrap = h >= H
            s = tl.where(wrap, h - H, h) * W + w0 + wrap.to(tl.int32)
        else:
            s = (h % H) * W + w0 + h // H
    return s, valid, t


@triton.jit
def _channels(blk, Dm, BD: tl.constexpr, VEC: tl.constexpr):
    """Channel indices of block blk: VEC contiguous channels per thread, the block across the lanes."""
    d = blk * BD + tl.max_contiguous(tl.multiple_of(tl.arange(0, BD), VEC), VEC)
    return d, d < Dm


@triton.jit
def _route_vector(ptr, k, Dm, d, md, PRESENT: tl.constexpr, BD: tl.constexpr):
    """Route k's entries of a (4 * D,) parameter (delta_bias, D) for channels d; zeros when it is absent."""
    v = tl.zeros([BD], dtype=tl.float32)
    if PRESENT:
        v = tl.load(ptr + k * Dm + d, mask=md, other=0.0)
    return v


@triton.jit
def _step_sizes(dl_ptr, sdl, s, m2, d, bias, SOFTPLUS: tl.constexpr):
    """(pre-activation, Δ) tiles of one route: Δ = delta + bias, softplus'd; 0 where masked (the identity step).
    With softplus the masked entries load as -inf, which softplus takes to 0 exactly (and its slope
    exp(pre - Δ) too), so no select is needed."""
    ptrs = dl_ptr + s[:, None] * sdl + d[None, :]
    if SOFTPLUS:
        pre = tl.load(ptrs, mask=m2, other=float('-inf')).to(tl.float32) + bias[None, :]
        dt = _softplus(pre)
    else:
        pre = tl.load(ptrs, mask=m2, other=0.0).to(tl.float32) + bias[None, :]
        dt = tl.where(m2, pre, 0.0)
    return pre, dt


@triton.jit
def _pick(tile, t, row: tl.constexpr):
    """Row ``row`` of a [BT, BD] tile (a register pick: the rows live in one thread)."""
    return tl.sum(tl.where((t == row)[:, None], tile, 0.0), axis=0)


@triton.jit
def _get(carry, offs_n, n):
    """State n of a carried [BN, BD] tile of per-(state, channel) values."""
    return tl.sum(tl.where((offs_n == n)[:, None], carry, 0.0), axis=0)


@triton.jit
def _put(carry, offs_n, n, v):
    """The carried [BN, BD] tile with state n replaced by v."""
    return tl.where((offs_n == n)[:, None], v[None, :], carry)


@triton.jit
def _load_states(ptr, row, Dm, N, d, md, offs_n):
    """A [BN, BD] tile of (state, channel) values: ``ptr[(row * N + n) * Dm + d]``."""
    m = (offs_n < N)[:, None] & md[None, :]
    return tl.load(ptr + (row * N + offs_n[:, None]) * Dm + d[None, :], mask=m, other=0.0)


@triton.jit
def _store_states(ptr, row, Dm, N, d, md, offs_n, v):
    m = (offs_n < N)[:, None] & md[None, :]
    tl.store(ptr + (row * N + offs_n[:, None]) * Dm + d[None, :], v, mask=m)


@triton.jit
def _carried(tile, scratch, slot, Dm, N, d, md, offs_n, BN: tl.constexpr):
    """Start a value carried from chunk to chunk, per (state, channel): a [BN, BD] register tile when N = 1;
    for larger N (N registers per channel and carried value would spill) row ``slot`` of a (.., D, N) fp32
    scratch array, written and read state by state with one layout, so that every thread reads back its own
    writes."""
    if BN > 1:
        for n in range(N):
            tl.store(scratch + (slot * N + n) * Dm + d, _get(tile, offs_n, n), mask=md)
    return tile


@triton.jit
def _carried_row(ptr, row, PRESENT: tl.constexpr, scratch, slot, Dm, N, d, md, offs_n, BN: tl.constexpr,
                 BD: tl.constexpr):
    """Start a carried value (see :func:`_carried`) from row ``row`` of a (.., D, N) array, or from zeros."""
    tile = tl.zeros([BN, BD], dtype=tl.float32)
    if BN == 1:
        if PRESENT:
            tile = _load_states(ptr, row, Dm, N, d, md, offs_n)
    else:
        for n in range(N):
            v = tl.zeros([BD], dtype=tl.float32)
            if PRESENT:
                v = tl.load(ptr + (row * N + n) * Dm + d, mask=md, other=0.0)
            tl.store(scratch + (slot * N + n) * Dm + d, v, mask=md)
    return tile


@triton.jit
def _carry_get(carry, scratch, slot, n, Dm, N, d, md, offs_n, BN: tl.constexpr):
    """State n of a carried value (see :func:`_carried`); also reads a plain (.., D, N) row when BN > 1."""
    if BN == 1:
        return _get(carry, offs_n, n)
    else:
        return tl.load(scratch + (slot * N + n) * Dm + d, mask=md, other=0.0)


@triton.jit
def _carry_set(carry, scratch, slot, n, v, Dm, N, d, md, offs_n, BN: tl.constexpr):
    if BN == 1:
        return _put(carry, offs_n, n, v)
    else:
        tl.store(scratch + (slot * N + n) * Dm + d, v, mask=md)
        return carry


@triton.jit
def _carry_save(carry, scratch, slot, ptr, row, Dm, N, d, md, offs_n, BN: tl.constexpr):
    """Store a carried value as row ``row`` of a (.., D, N) array."""
    if BN == 1:
        _store_states(ptr, row, Dm, N, d, md, offs_n, carry)
    else:
        for n in range(N):
            v = tl.load(scratch + (slot * N + n) * Dm + d, mask=md, other=0.0)
            tl.store(ptr + (row * N + n) * Dm + d, v, mask=md)


@triton.jit
def _sum_add(hi, lo, x):
    """Neumaier's compensated summation: (hi, lo) + x. The decay sum of the chunks below a chunk is then the
    segment's total minus the running sum above it, (T_hi - P_hi) + (T_lo - P_lo), to fp32 round-off of that
    difference itself rather than of the total: no per-chunk array of decay sums is needed."""
    t = hi + x
    lo += tl.where(tl.abs(hi) >= tl.abs(x), (hi - t) + x, (x - t) + hi)
    return t, lo


@triton.jit
def _rate(A_tile, A_ptr, k, Dm, N, n, d, md, offs_n, BN: tl.constexpr):
    """Route k's A (scaled by log2 e) for state n: from the tile loaded once per program (``_load_states(A_ptr,
    k, ...)``) when N = 1, so that the chunk loop loads no parameters; state by state otherwise (a [16, BD] tile
    would take 16 registers per channel)."""
    if BN == 1:
        return _get(A_tile, offs_n, n)
    else:
        return tl.load(A_ptr + (k * N + n) * Dm + d, mask=md, other=0.0)


# ---------------------------------------------------------------------------------------------------- forward
@triton.jit
def _fwd_summary_kernel(x_ptr, dl_ptr, A_ptr, B_ptr, bias_ptr, er_ptr, seg_ptr, segs_ptr, lo_ptr, scr_ptr,
                        L, H, W, Dm, N, n_chunks, chunks_per_prog, n_segs,
                        sxb, sdb, sdp, sdk, sBb, sBp, sBk, sBn,
                        PAIR: tl.constexpr, WRAP: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                        TWO_LEVEL: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, VEC: tl.constexpr,
                        BN: tl.constexpr):
    """Walks its segment's chunks bottom-up: the reverse route's state entering every chunk from below (from a
    zero start at the segment's end) and, with several segments, both routes' segment summaries (decay sum,
    end state from a zero start; the reverse route's decay sum with its compensation term in ``lo_ptr``)."""
    j = tl.program_id(0)
    b = tl.program_id(2).to(tl.int64)
    d, md = _channels(tl.program_id(1), Dm, BD, VEC)
    offs_n = tl.arange(0, BN)
    kf, kr = PAIR, PAIR + 2
    bias_f = _route_vector(bias_ptr, kf, Dm, d, md, HAS_BIAS, BD)
    bias_r = _route_vector(bias_ptr, kr, Dm, d, md, HAS_BIAS, BD)
    zero = tl.zeros([BN, BD], dtype=tl.float32)
    slot = (b * n_segs + j) * 2
    hr = _carried(zero, scr_ptr, slot, Dm, N, d, md, offs_n, BN)  # reverse route: state entering the chunk
    sf = _carried(zero, scr_ptr, slot + 1, Dm, N, d, md, offs_n, BN)  # forward route: end state of the chunks
    #                                                                   below, from a zero start
    sum_r = tl.zeros([BD], dtype=tl.float32)   # decay sums of the chunks below the current one
    lo_r = tl.zeros([BD], dtype=tl.float32)
    sum_f = tl.zeros([BD], dtype=tl.float32)
    Af_tile = _load_states(A_ptr, kf, Dm, N, d, md, offs_n)
    Ar_tile = _load_states(A_ptr, kr, Dm, N, d, md, offs_n)
    c0 = j * chunks_per_prog
    c1 = tl.minimum(c0 + chunks_per_prog, n_chunks)
    for i in range(0, c1 - c0):
        c = c1 - 1 - i
        s, valid, t = _rows(c, L, H, W, BT, PAIR, WRAP)
        m2 = valid[:, None] & md[None, :]
        u = tl.load(x_ptr + b * sxb + s[:, None] * Dm + d[None, :], mask=m2, other=0.0).to(tl.float32)
        _, dtr = _step_sizes(dl_ptr + b * sdb + kr * sdk, sdp, s, m2, d, bias_r, SOFTPLUS)
        row = (b * n_chunks + c) * 2 + PAIR
        if TWO_LEVEL:
            _, dtf = _step_sizes(dl_ptr + b * sdb + kf * sdk, sdp, s, m2, d, bias_f, SOFTPLUS)
        for n in range(N):
            Br = tl.load(B_ptr + b * sBb + s * sBp + kr * sBk + n * sBn, mask=valid, other=0.0).to(tl.float32)
            Ar = _rate(Ar_tile, A_ptr, kr, Dm, N, n, d, md, offs_n, BN)
            E = _carry_get(hr, scr_ptr, slot, n, Dm, N, d, md, offs_n, BN)
            tl.store(er_ptr + (row * N + n) * Dm + d, E, mask=md)
            a = _exp2(dtr * Ar[None, :])
            inp = dtr * u * Br[:, None]
            h = _scan_states(a, tl.where((t == BT - 1)[:, None], inp + a * E[None, :], inp), True)
            hr = _carry_set(hr, scr_ptr, slot, n, _pick(h, t, 0), Dm, N, d, md, offs_n, BN)
            if TWO_LEVEL:
                Bf = tl.load(B_ptr + b * sBb + s * sBp + kf * sBk + n * sBn, mask=valid, other=0.0).to(tl.float32)
                Af = _rate(Af_tile, A_ptr, kf, Dm, N, n, d, md, offs_n, BN)
                h = _scan_states(_exp2(dtf * Af[None, :]), dtf * u * Bf[:, None], False)
                acc = _carry_get(sf, scr_ptr, slot + 1, n, Dm, N, d, md, offs_n, BN)
                sf = _carry_set(sf, scr_ptr, slot + 1, n, acc + _exp2(sum_f * Af) * _pick(h, t, BT - 1),
                                Dm, N, d, md, offs_n, BN)
        if TWO_LEVEL:
            sum_r, lo_r = _sum_add(sum_r, lo_r, tl.sum(dtr, axis=0))
            sum_f += tl.sum(dtf, axis=0)
    if TWO_LEVEL:
        row = (b * n_segs + j) * 4
        _carry_save(sf, scr_ptr, slot + 1, seg_ptr, row + kf, Dm, N, d, md, offs_n, BN)
        _carry_save(hr, scr_ptr, slot, seg_ptr, row + kr, Dm, N, d, md, offs_n, BN)
        tl.store(segs_ptr + (row + kf) * Dm + d, sum_f, mask=md)
        tl.store(segs_ptr + (row + kr) * Dm + d, sum_r, mask=md)
        tl.store(lo_ptr + ((b * n_segs + j) * 2 + PAIR) * Dm + d, lo_r, mask=md)


@triton.jit
def _carry_kernel(st_ptr, sd_ptr, A_ptr, Dm, N, n_chunks, ADJOINT: tl.constexpr,
                  CB: tl.constexpr, BLK: tl.constexpr):
    """Segment summaries -> segment entry states, in place: E_c = P_{c'} E_{c'} + S_{c'} with c' the segment
    before c in the route's direction (c - 1 for the forward routes 0, 1; c + 1 for the reverse routes 2, 3;
    swapped for the adjoint) and P = exp(A * sum(Δ)). One lane per (channel, state); CB segments per memory
    round trip."""
    k = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    j = tl.program_id(0) * BLK + tl.arange(0, BLK)  # (state, channel) pairs n * D + d
    mj = j < Dm * N
    A = tl.load(A_ptr + k * Dm * N + j, mask=mj, other=0.0)
    r = tl.arange(0, CB)
    left_to_right = (k < 2) != ADJOINT
    carry = tl.zeros([BLK], dtype=tl.float32)
    for blk in range(0, tl.cdiv(n_chunks, CB)):
        i = blk * CB + r
        c = tl.where(left_to_right, i, n_chunks - 1 - i)
        mi = i < n_chunks
        m2 = mi[:, None] & mj[None, :]
        row = (b * n_chunks + c) * 4 + k
        S = tl.load(st_ptr + row[:, None] * Dm * N + j[None, :], mask=m2, other=0.0)
        sd = tl.load(sd_ptr + row[:, None] * Dm + j[None, :] % Dm, mask=m2, other=0.0)
        P = _exp2(sd * A[None, :])
        S = tl.where((r == 0)[:, None], S + P * carry[None, :], S)
        _, inc = tl.associative_scan((P, S), 0, _affine_combine)  # state after segment i
        c_first = tl.where(left_to_right, blk * CB, n_chunks - 1 - blk * CB)
        tl.store(st_ptr + ((b * n_chunks + c_first) * 4 + k) * Dm * N + j, carry, mask=mj)
        nxt = tl.where(left_to_right, c + 1, c - 1)
        row_n = (b * n_chunks + nxt) * 4 + k
        tl.store(st_ptr + row_n[:, None] * Dm * N + j[None, :], inc,
                 mask=((r < CB - 1) & (i + 1 < n_chunks))[:, None] & mj[None, :])
        carry = _pick(inc, r, CB - 1)


@triton.jit
def _fwd_kernel(x_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, er_ptr, seg_ptr, segs_ptr, lo_ptr, scr_ptr,
                y_ptr,
                L, H, W, Dm, N, n_chunks, chunks_per_prog, n_segs,
                sxb, sdb, sdp, sdk, sBb, sBp, sBk, sBn, sCb, sCp, sCk, sCn,
                PAIR: tl.constexpr, WRAP: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
                SOFTPLUS: tl.constexpr, TWO_LEVEL: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr,
                VEC: tl.constexpr, BN: tl.constexpr):
    """Walks its segment's chunks top-down: the forward route from the state carried in registers, the reverse
    route from its saved chunk-entry states (made exact with the segment carry when there are several segments,
    and written back for the backward); y = (row pair) or += (column pair)."""
    j = tl.program_id(0)
    b = tl.program_id(2).to(tl.int64)
    d, md = _channels(tl.program_id(1), Dm, BD, VEC)
    offs_n = tl.arange(0, BN)
    kf, kr = PAIR, PAIR + 2
    bias_f = _route_vector(bias_ptr, kf, Dm, d, md, HAS_BIAS, BD)
    bias_r = _route_vector(bias_ptr, kr, Dm, d, md, HAS_BIAS, BD)
    Dsum = _route_vector(D_ptr, kf, Dm, d, md, HAS_D, BD) + _route_vector(D_ptr, kr, Dm, d, md, HAS_D, BD)
    Af_tile = _load_states(A_ptr, kf, Dm, N, d, md, offs_n)
    Ar_tile = _load_states(A_ptr, kr, Dm, N, d, md, offs_n)
    slot = (b * n_segs + j) * 2
    seg_row = (b * n_segs + j) * 4
    hf = _carried_row(seg_ptr, seg_row + kf, TWO_LEVEL, scr_ptr, slot, Dm, N, d, md, offs_n, BN, BD)
    seg_r = tl.zeros([BN, BD], dtype=tl.float32)  # the reverse route's state entering the segment from below
    total_hi = tl.zeros([BD], dtype=tl.float32)   # ... its decay sum over the segment, and the running sum
    total_lo = tl.zeros([BD], dtype=tl.float32)   #     over the chunks above the current one
    run_hi = tl.zeros([BD], dtype=tl.float32)
    run_lo = tl.zeros([BD], dtype=tl.float32)
    if TWO_LEVEL:
        if BN == 1:
            seg_r = _load_states(seg_ptr, seg_row + kr, Dm, N, d, md, offs_n)
        total_hi = tl.load(segs_ptr + (seg_row + kr) * Dm + d, mask=md, other=0.0)
        total_lo = tl.load(lo_ptr + ((b * n_segs + j) * 2 + PAIR) * Dm + d, mask=md, other=0.0)
    c0 = j * chunks_per_prog
    for c in range(c0, tl.minimum(c0 + chunks_per_prog, n_chunks)):
        s, valid, t = _rows(c, L, H, W, BT, PAIR, WRAP)
        m2 = valid[:, None] & md[None, :]
        u = tl.load(x_ptr + b * sxb + s[:, None] * Dm + d[None, :], mask=m2, other=0.0).to(tl.float32)
        y = Dsum[None, :] * u
        _, dt = _step_sizes(dl_ptr + b * sdb + kf * sdk, sdp, s, m2, d, bias_f, SOFTPLUS)
        for n in range(N):  # the forward route: top-down from the carried state
            Bv = tl.load(B_ptr + b * sBb + s * sBp + kf * sBk + n * sBn, mask=valid, other=0.0).to(tl.float32)
            Cv = tl.load(C_ptr + b * sCb + s * sCp + kf * sCk + n * sCn, mask=valid, other=0.0).to(tl.float32)
            A = _rate(Af_tile, A_ptr, kf, Dm, N, n, d, md, offs_n, BN)
            a = _exp2(dt * A[None, :])
            inp = dt * u * Bv[:, None]
            E = _carry_get(hf, scr_ptr, slot, n, Dm, N, d, md, offs_n, BN)
            h = _scan_states(a, tl.where((t == 0)[:, None], inp + a * E[None, :], inp), False)
            y += h * Cv[:, None]
            hf = _carry_set(hf, scr_ptr, slot, n, _pick(h, t, BT - 1), Dm, N, d, md, offs_n, BN)
        _, dt = _step_sizes(dl_ptr + b * sdb + kr * sdk, sdp, s, m2, d, bias_r, SOFTPLUS)
        row = (b * n_chunks + c) * 2 + PAIR
        if TWO_LEVEL:
            run_hi, run_lo = _sum_add(run_hi, run_lo, tl.sum(dt, axis=0))
            decay_sum = (total_hi - run_hi) + (total_lo - run_lo)  # of the chunks below this one
        for n in range(N):  # the reverse route: bottom-up from the state entering from below
            Bv = tl.load(B_ptr + b * sBb + s * sBp + kr * sBk + n * sBn, mask=valid, other=0.0).to(tl.float32)
            Cv = tl.load(C_ptr + b * sCb + s * sCp + kr * sCk + n * sCn, mask=valid, other=0.0).to(tl.float32)
            A = _rate(Ar_tile, A_ptr, kr, Dm, N, n, d, md, offs_n, BN)
            E = tl.load(er_ptr + (row * N + n) * Dm + d, mask=md, other=0.0)
            if TWO_LEVEL:
                E += _exp2(decay_sum * A) * _carry_get(seg_r, seg_ptr, seg_row + kr, n, Dm, N, d, md, offs_n, BN)
                tl.store(er_ptr + (row * N + n) * Dm + d, E, mask=md)
            a = _exp2(dt * A[None, :])
            inp = dt * u * Bv[:, None]
            y += _scan_states(a, tl.where((t == BT - 1)[:, None], inp + a * E[None, :], inp), True) * Cv[:, None]
        y_ptrs = y_ptr + b * L * Dm + s[:, None] * Dm + d[None, :]
        if PAIR == 1:
            y += tl.load(y_ptrs, mask=m2, other=0.0)
        tl.store(y_ptrs, y, mask=m2)


# ---------------------------------------------------------------------------------------------------- backward
@triton.jit
def _bwd_summary_kernel(dl_ptr, A_ptr, C_ptr, bias_ptr, dy_ptr, qe_ptr, seg_ptr, segs_ptr, lo_ptr, scr_ptr,
                        L, H, W, Dm, N, n_chunks, chunks_per_prog, n_segs, K, n_sc, n_qrows,
                        sdb, sdp, sdk, sCb, sCp, sCk, sCn, syb,
                        PAIR: tl.constexpr, WRAP: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                        TWO_LEVEL: tl.constexpr, RECOMPUTE: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr,
                        VEC: tl.constexpr, BN: tl.constexpr):
    """Walks its segment's chunks bottom-up: the forward route's adjoint q = a * dL/dh entering every chunk
    from below (from a zero start at the segment's end), stored for the bottom chunk of every superchunk of K
    chunks (every chunk when K = 1), and, with several segments, both routes' adjoint segment summaries (the
    forward route's decay sum with its compensation term in ``lo_ptr``)."""
    j = tl.program_id(0)
    b = tl.program_id(2).to(tl.int64)
    d, md = _channels(tl.program_id(1), Dm, BD, VEC)
    offs_n = tl.arange(0, BN)
    kf, kr = PAIR, PAIR + 2
    bias_f = _route_vector(bias_ptr, kf, Dm, d, md, HAS_BIAS, BD)
    bias_r = _route_vector(bias_ptr, kr, Dm, d, md, HAS_BIAS, BD)
    zero = tl.zeros([BN, BD], dtype=tl.float32)
    slot = (b * n_segs + j) * 2
    qf = _carried(zero, scr_ptr, slot, Dm, N, d, md, offs_n, BN)  # forward route's adjoint entering the chunk
    sr = _carried(zero, scr_ptr, slot + 1, Dm, N, d, md, offs_n, BN)  # reverse route's adjoint leaving the
    #                                                                   chunks below, from a zero start
    sum_f = tl.zeros([BD], dtype=tl.float32)
    lo_f = tl.zeros([BD], dtype=tl.float32)
    sum_r = tl.zeros([BD], dtype=tl.float32)
    Af_tile = _load_states(A_ptr, kf, Dm, N, d, md, offs_n)
    Ar_tile = _load_states(A_ptr, kr, Dm, N, d, md, offs_n)
    c0 = j * chunks_per_prog
    c1 = tl.minimum(c0 + chunks_per_prog, n_chunks)
    for i in range(0, c1 - c0):
        c = c1 - 1 - i
        s, valid, t = _rows(c, L, H, W, BT, PAIR, WRAP)
        m2 = valid[:, None] & md[None, :]
        dy = tl.load(dy_ptr + b * syb + s[:, None] * Dm + d[None, :], mask=m2, other=0.0).to(tl.float32)
        _, dtf = _step_sizes(dl_ptr + b * sdb + kf * sdk, sdp, s, m2, d, bias_f, SOFTPLUS)
        row = (b * n_chunks + c) * 2 + PAIR  # K = 1: every chunk's entry (n_qrows = n_chunks)
        mq = md
        if RECOMPUTE:  # only the bottom chunk of each superchunk keeps its entry
            row = (b * n_qrows + j * n_sc + (c - c0) // K) * 2 + PAIR
            mq = md & (((c - c0) % K == K - 1) | (c == c1 - 1))
        if TWO_LEVEL:
            _, dtr = _step_sizes(dl_ptr + b * sdb + kr * sdk, sdp, s, m2, d, bias_r, SOFTPLUS)
        for n in range(N):
            Cf = tl.load(C_ptr + b * sCb + s * sCp + kf * sCk + n * sCn, mask=valid, other=0.0).to(tl.float32)
            Af = _rate(Af_tile, A_ptr, kf, Dm, N, n, d, md, offs_n, BN)
            a = _exp2(dtf * Af[None, :])
            cy = dy * Cf[:, None]
            Q = _carry_get(qf, scr_ptr, slot, n, Dm, N, d, md, offs_n, BN)
            tl.store(qe_ptr + (row * N + n) * Dm + d, Q, mask=mq)
            g = _scan_adjoint(tl.where((t == BT - 1)[:, None], cy + Q[None, :], cy), a, True)
            qf = _carry_set(qf, scr_ptr, slot, n, _pick(a * g, t, 0), Dm, N, d, md, offs_n, BN)
            if TWO_LEVEL:
                Cr = tl.load(C_ptr + b * sCb + s * sCp + kr * sCk + n * sCn, mask=valid, other=0.0).to(tl.float32)
                Ar = _rate(Ar_tile, A_ptr, kr, Dm, N, n, d, md, offs_n, BN)
                a = _exp2(dtr * Ar[None, :])
                g = _scan_adjoint(dy * Cr[:, None], a, False)
                acc = _carry_get(sr, scr_ptr, slot + 1, n, Dm, N, d, md, offs_n, BN)
                sr = _carry_set(sr, scr_ptr, slot + 1, n, acc + _exp2(sum_r * Ar) * _pick(a * g, t, BT - 1),
                                Dm, N, d, md, offs_n, BN)
        if TWO_LEVEL:
            sum_f, lo_f = _sum_add(sum_f, lo_f, tl.sum(dtf, axis=0))
            sum_r += tl.sum(dtr, axis=0)
    if TWO_LEVEL:
        row = (b * n_segs + j) * 4
        _carry_save(qf, scr_ptr, slot, seg_ptr, row + kf, Dm, N, d, md, offs_n, BN)
        _carry_save(sr, scr_ptr, slot + 1, seg_ptr, row + kr, Dm, N, d, md, offs_n, BN)
        tl.store(segs_ptr + (row + kf) * Dm + d, sum_f, mask=md)
        tl.store(segs_ptr + (row + kr) * Dm + d, sum_r, mask=md)
        tl.store(lo_ptr + ((b * n_segs + j) * 2 + PAIR) * Dm + d, lo_f, mask=md)


@triton.jit
def _bwd_route(u, dy, s, valid, m2, t, d, md, offs_n, dl_ptr, sdp, A_ptr, A_tile, B_ptr, C_ptr, ent_ptr,
               ddl_ptr, dB_ptr, dC_ptr, bias, acc_A, acc_bias, carry, scr_ptr, slot, seg_q, seg_ptr, seg_row,
               totals, running, erow, k, b, L, Dm, N,
               sBb, sBp, sBk, sBn, sCb, sCp, sCk, sCn, ACCUMULATE_BC, REVERSE: tl.constexpr,
               TWO_LEVEL: tl.constexpr, SOFTPLUS: tl.constexpr, BT: tl.constexpr, BN: tl.constexpr):
    """All gradients of route k on one chunk and channel block. The forward route (top-down) takes its state
    from the carried tile and its adjoint from the chunk entries ``ent_ptr`` (made exact with the segment's
    adjoint entry ``seg_q`` when there are several segments); the reverse route its state from the saved chunk
    entries and its adjoint from the carried tile. Stores d delta, adds this block's dB/dC to the earlier
    blocks' (ACCUMULATE_BC), and returns (du of this route, the dA and d(delta_bias) running sums, the carry,
    the running decay sum (hi, lo) of the forward route over the chunks above; ``totals``: its segment total)."""
    pre, dt = _step_sizes(dl_ptr, sdp, s, m2, d, bias, SOFTPLUS)
    run_hi, run_lo = running
    decay_sum = run_hi
    if TWO_LEVEL:
        if not REVERSE:
            run_hi, run_lo = _sum_add(run_hi, run_lo, tl.sum(dt, axis=0))
            decay_sum = (totals[0] - run_hi) + (totals[1] - run_lo)  # of the chunks below this one
    ddt = tl.zeros(u.shape, dtype=tl.float32)
    du = tl.zeros(u.shape, dtype=tl.float32)
    mbn = valid[:, None] & (offs_n < N)[None, :]
    bc = b * L * 4 * N + s[:, None] * 4 * N + k * N + offs_n[None, :]
    dB = tl.zeros([BT, BN], dtype=tl.float32)
    dC = tl.zeros([BT, BN], dtype=tl.float32)
    for n in range(N):
        Bv = tl.load(B_ptr + b * sBb + s * sBp + k * sBk + n * sBn, mask=valid, other=0.0).to(tl.float32)
        Cv = tl.load(C_ptr + b * sCb + s * sCp + k * sCk + n * sCn, mask=valid, other=0.0).to(tl.float32)
        A = _rate(A_tile, A_ptr, k, Dm, N, n, d, md, offs_n, BN)
        entry = tl.load(ent_ptr + (erow * N + n) * Dm + d, mask=md, other=0.0)
        a = _exp2(dt * A[None, :])
        inp = dt * u * Bv[:, None]
        c = dy * Cv[:, None]
        if REVERSE:  # states run bottom-up (entry at the last row), the adjoint top-down (entry at the first)
            h = _scan_states(a, tl.where((t == BT - 1)[:, None], inp + a * entry[None, :], inp), True)
            Q = _carry_get(carry, scr_ptr, slot, n, Dm, N, d, md, offs_n, BN)
            g = _scan_adjoint(tl.where((t == 0)[:, None], c + Q[None, :], c), a, False)
            carry = _carry_set(carry, scr_ptr, slot, n, _pick(a * g, t, BT - 1), Dm, N, d, md, offs_n, BN)
        else:
            if TWO_LEVEL:
                entry += _exp2(decay_sum * A) * _carry_get(seg_q, seg_ptr, seg_row, n, Dm, N, d, md, offs_n, BN)
            E = _carry_get(carry, scr_ptr, slot, n, Dm, N, d, md, offs_n, BN)
            h = _scan_states(a, tl.where((t == 0)[:, None], inp + a * E[None, :], inp), False)
            g = _scan_adjoint(tl.where((t == BT - 1)[:, None], c + entry[None, :], c), a, True)
            carry = _carry_set(carry, scr_ptr, slot, n, _pick(h, t, BT - 1), Dm, N, d, md, offs_n, BN)
        ah = h - inp  # a_l h_{l-1}
        gB = g * Bv[:, None]
        ddt += gB * u + g * ah * (A * _LN2)[None, :]  # A arrives scaled by log2(e) for exp2
        du += gB * dt
        sel = (offs_n == n)[None, :]
        dB = tl.where(sel, tl.sum(g * dt * u, axis=1)[:, None], dB)
        dC = tl.where(sel, tl.sum(h * dy, axis=1)[:, None], dC)
        acc_A = tl.where(sel, acc_A + tl.sum(g * ah * dt, axis=0)[:, None], acc_A)
    if SOFTPLUS:  # d softplus(x)/dx = sigmoid(x) = exp(x - softplus(x)): exactly 1 above 20 (softplus(x) = x),
        ddt = ddt * _exp2((pre - dt) * _LOG2E)  # exactly 0 where masked (pre = -inf, see _step_sizes)
    else:
        ddt = tl.where(m2, ddt, 0.0)
    acc_bias += tl.sum(ddt, axis=0)
    tl.store(ddl_ptr + b * L * 4 * Dm + s[:, None] * 4 * Dm + k * Dm + d[None, :],
             ddt.to(ddl_ptr.dtype.element_ty), mask=m2)
    if ACCUMULATE_BC:
        dB += tl.load(dB_ptr + bc, mask=mbn, other=0.0).to(tl.float32)
        dC += tl.load(dC_ptr + bc, mask=mbn, other=0.0).to(tl.float32)
    tl.store(dB_ptr + bc, dB.to(dB_ptr.dtype.element_ty), mask=mbn)
    tl.store(dC_ptr + bc, dC.to(dC_ptr.dtype.element_ty), mask=mbn)
    return du, acc_A, acc_bias, carry, (run_hi, run_lo)


@triton.jit
def _adjoint_entries(c, ce, qrow, srow, qe_ptr, sq_ptr, dl_ptr, sdp, dy_ptr, C_ptr, A_ptr, A_tile, bias, k, b,
                     L, H, W, Dm, N, d, md, offs_n, sCb, sCp, sCk, sCn, syb,
                     PAIR: tl.constexpr, WRAP: tl.constexpr, SOFTPLUS: tl.constexpr, BT: tl.constexpr,
                     BN: tl.constexpr):
    """The forward route's adjoint entering each chunk c .. ce (one superchunk) from below, into scratch rows
    srow + 0 .. srow + ce - c: from the superchunk's stored entry (row ``qrow``, entering chunk ce), the summary
    kernel's recurrence walked up the superchunk again (same arithmetic, so the same values it would have
    stored for every chunk)."""
    for n in range(N):
        Q = tl.load(qe_ptr + (qrow * N + n) * Dm + d, mask=md, other=0.0)
        tl.store(sq_ptr + ((srow + ce - c) * N + n) * Dm + d, Q, mask=md)
    for i in range(0, ce - c):  # chunk cc gives the entry of chunk cc - 1
        cc = ce - i
        s, valid, t = _rows(cc, L, H, W, BT, PAIR, WRAP)
        m2 = valid[:, None] & md[None, :]
        dy = tl.load(dy_ptr + b * syb + s[:, None] * Dm + d[None, :], mask=m2, other=0.0).to(tl.float32)
        _, dt = _step_sizes(dl_ptr, sdp, s, m2, d, bias, SOFTPLUS)
        for n in range(N):
            Cv = tl.load(C_ptr + b * sCb + s * sCp + k * sCk + n * sCn, mask=valid, other=0.0).to(tl.float32)
            A = _rate(A_tile, A_ptr, k, Dm, N, n, d, md, offs_n, BN)
            a = _exp2(dt * A[None, :])
            cy = dy * Cv[:, None]
            Q = tl.load(sq_ptr + ((srow + cc - c) * N + n) * Dm + d, mask=md, other=0.0)
            g = _scan_adjoint(tl.where((t == BT - 1)[:, None], cy + Q[None, :], cy), a, True)
            tl.store(sq_ptr + ((srow + cc - 1 - c) * N + n) * Dm + d, _pick(a * g, t, 0), mask=md)


@triton.jit
def _bwd_kernel(x_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, dy_ptr, er_ptr, fseg_ptr, qe_ptr, aseg_ptr,
                asegs_ptr, alo_ptr, scr_ptr, sq_ptr, dx_ptr, ddl_ptr, dB_ptr, dC_ptr, pA_ptr, pD_ptr, pbias_ptr,
                L, H, W, Dm, N, n_chunks, chunks_per_prog, n_blocks, n_segs, n_fsegs, fsegs_per_seg, K, n_sc, n_qrows,
                sxb, sdb, sdp, sdk, sBb, sBp, sBk, sBn, sCb, sCp, sCk, sCn, syb,
                PAIR: tl.constexpr, WRAP: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
                SOFTPLUS: tl.constexpr,
                TWO_LEVEL: tl.constexpr, FWD_TWO_LEVEL: tl.constexpr, RECOMPUTE: tl.constexpr,
                BT: tl.constexpr, BD: tl.constexpr, VEC: tl.constexpr, BN: tl.constexpr):
    """Every gradient of both routes of the pair, walking the segment's chunks top-down with the forward
    route's state and the reverse route's adjoint carried in registers; loops over the channel blocks itself so
    that dB/dC (summed over channels) are complete in this program. Writes dx (row pair) or adds to it (column
    pair), d delta and dB/dC of its two routes, and per-program partial sums of dA, dD, d(delta_bias).
    With superchunks (RECOMPUTE, N > 1) the forward route's adjoint entries are stored once per K chunks; at the
    top of each superchunk :func:`_adjoint_entries` recomputes its K entries into this program's scratch rows."""
    b = tl.program_id(1).to(tl.int64)
    prog = tl.program_id(0)
    kf, kr = PAIR, PAIR + 2
    offs_n = tl.arange(0, BN)
    c0 = prog * chunks_per_prog
    c1 = tl.minimum(c0 + chunks_per_prog, n_chunks)
    part = b * tl.num_programs(0) + prog  # this program's row of partial sums
    for blk in range(0, n_blocks):
        d, md = _channels(blk, Dm, BD, VEC)
        bias_f = _route_vector(bias_ptr, kf, Dm, d, md, HAS_BIAS, BD)
        bias_r = _route_vector(bias_ptr, kr, Dm, d, md, HAS_BIAS, BD)
        Dsum = _route_vector(D_ptr, kf, Dm, d, md, HAS_D, BD) + _route_vector(D_ptr, kr, Dm, d, md, HAS_D, BD)
        acc_D = tl.zeros([BD], dtype=tl.float32)
        acc_bf = tl.zeros([BD], dtype=tl.float32)
        acc_br = tl.zeros([BD], dtype=tl.float32)
        acc_Af = tl.zeros([BD, BN], dtype=tl.float32)
        acc_Ar = tl.zeros([BD, BN], dtype=tl.float32)
        Af_tile = _load_states(A_ptr, kf, Dm, N, d, md, offs_n)
        Ar_tile = _load_states(A_ptr, kr, Dm, N, d, md, offs_n)
        slot = (b * n_segs + prog) * 2
        seg_row = (b * n_segs + prog) * 4
        # the forward route's state and the reverse route's adjoint, entering each chunk from above
        hf = _carried_row(fseg_ptr, (b * n_fsegs + prog * fsegs_per_seg) * 4 + kf, FWD_TWO_LEVEL, scr_ptr, slot,
                          Dm, N, d, md, offs_n, BN, BD)
        qr = _carried_row(aseg_ptr, seg_row + kr, TWO_LEVEL, scr_ptr, slot + 1, Dm, N, d, md, offs_n, BN, BD)
        seg_q = tl.zeros([BN, BD], dtype=tl.float32)  # forward route's adjoint entering the segment from below
        totals = (tl.zeros([BD], dtype=tl.float32), tl.zeros([BD], dtype=tl.float32))  # its decay sum over the
        running = (tl.zeros([BD], dtype=tl.float32), tl.zeros([BD], dtype=tl.float32))  # segment, and above
        if TWO_LEVEL:
            if BN == 1:
                seg_q = _load_states(aseg_ptr, seg_row + kf, Dm, N, d, md, offs_n)
            totals = (tl.load(asegs_ptr + (seg_row + kf) * Dm + d, mask=md, other=0.0),
                      tl.load(alo_ptr + ((b * n_segs + prog) * 2 + PAIR) * Dm + d, mask=md, other=0.0))
        for c in range(c0, c1):
            s, valid, t = _rows(c, L, H, W, BT, PAIR, WRAP)
            m2 = valid[:, None] & md[None, :]
            u = tl.load(x_ptr + b * sxb + s[:, None] * Dm + d[None, :], mask=m2, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + b * syb + s[:, None] * Dm + d[None, :], mask=m2, other=0.0).to(tl.float32)
            acc_D += tl.sum(dy * u, axis=0)
            erow = (b * n_chunks + c) * 2 + PAIR
            if RECOMPUTE:  # the forward route's adjoint entry from this program's scratch rows
                srow = (b * n_segs + prog) * K
                if (c - c0) % K == 0:
                    qrow = (b * n_qrows + prog * n_sc + (c - c0) // K) * 2 + PAIR  # the superchunk's stored entry
                    _adjoint_entries(c, tl.minimum(c + K, c1) - 1, qrow, srow, qe_ptr, sq_ptr,
                                     dl_ptr + b * sdb + kf * sdk, sdp, dy_ptr, C_ptr, A_ptr, Af_tile, bias_f, kf, b,
                                     L, H, W, Dm, N, d, md, offs_n, sCb, sCp, sCk, sCn, syb,
                                     PAIR, WRAP, SOFTPLUS, BT, BN)
                    tl.debug_barrier()  # every thread sees the scratch rows (each reads its own writes anyway)
                ent_f, frow = sq_ptr, srow + (c - c0) % K
            else:  # one entry per chunk: the same rows as the reverse route's (n_qrows = n_chunks)
                ent_f, frow = qe_ptr, erow
            du_f, acc_Af, acc_bf, hf, running = _bwd_route(
                u, dy, s, valid, m2, t, d, md, offs_n, dl_ptr + b * sdb + kf * sdk, sdp, A_ptr, Af_tile, B_ptr, C_ptr,
                ent_f, ddl_ptr, dB_ptr, dC_ptr, bias_f, acc_Af, acc_bf, hf, scr_ptr, slot, seg_q, aseg_ptr,
                seg_row + kf, totals, running, frow, kf, b, L, Dm,
                N, sBb, sBp, sBk, sBn, sCb, sCp, sCk, sCn, blk > 0, False, TWO_LEVEL, SOFTPLUS, BT, BN)
            du_r, acc_Ar, acc_br, qr, running = _bwd_route(
                u, dy, s, valid, m2, t, d, md, offs_n, dl_ptr + b * sdb + kr * sdk, sdp, A_ptr, Ar_tile, B_ptr, C_ptr,
                er_ptr, ddl_ptr, dB_ptr, dC_ptr, bias_r, acc_Ar, acc_br, qr, scr_ptr, slot + 1, seg_q, aseg_ptr,
                seg_row + kf, totals, running, erow, kr, b, L, Dm,
                N, sBb, sBp, sBk, sBn, sCb, sCp, sCk, sCn, blk > 0, True, TWO_LEVEL, SOFTPLUS, BT, BN)
            du = Dsum[None, :] * dy + du_f + du_r
            dx_ptrs = dx_ptr + b * L * Dm + s[:, None] * Dm + d[None, :]
            if PAIR == 1:
                du += tl.load(dx_ptrs, mask=m2, other=0.0).to(tl.float32)
            tl.store(dx_ptrs, du.to(dx_ptr.dtype.element_ty), mask=m2)
        mdn = md[:, None] & (offs_n < N)[None, :]
        tl.store(pA_ptr + ((part * 4 + kf) * Dm + d[:, None]) * N + offs_n[None, :], acc_Af, mask=mdn)
        tl.store(pA_ptr + ((part * 4 + kr) * Dm + d[:, None]) * N + offs_n[None, :], acc_Ar, mask=mdn)
        tl.store(pbias_ptr + (part * 4 + kf) * Dm + d, acc_bf, mask=md)
        tl.store(pbias_ptr + (part * 4 + kr) * Dm + d, acc_br, mask=md)
        if PAIR == 0:  # sum(dy * x) is the same for every route; the row pair writes it
            tl.store(pD_ptr + part * Dm + d, acc_D, mask=md)


FWD_KERNELS = {'summary': _fwd_summary_kernel, 'carry': _carry_kernel, 'main': _fwd_kernel}
BWD_KERNELS = {'summary': _bwd_summary_kernel, 'carry': _carry_kernel, 'main': _bwd_kernel}


# ---------------------------------------------------------------------------------------------------- host side
def _sm_count(device):
    if device.type != 'cuda':
        return 0
    return torch.cuda.get_device_properties(device).multi_processor_count


#: Positions per chunk: the scan length inside a thread and the granularity of the saved chunk-entry states.
#: The interpreter runs the same kernels with longer chunks (fewer Python-level iterations); tests may set it.
CHUNK = 32 if _INTERPRET else 8


def _channel_block(dim, vec, max_warps, fewest_blocks):
    """(BD, warps): BD = 32 * vec * warps channels per block, wasting the fewest padded channels (VMamba's
    widths are 3 * 2^k: 96 and 192 pad up to 128-multiples, the others divide exactly); ties go to the smallest
    block (more programs) or, for the backward, which loops over the blocks itself, to the fewest blocks."""
    options = []
    for warps in (1, 2, 4, 8)[:max_warps.bit_length()]:
        bd = 32 * vec * warps
        blocks = -(-dim // bd)
        options.append((blocks * bd - dim, blocks if fewest_blocks else -blocks, bd, warps))
    _, _, bd, warps = min(options)
    return bd, warps


def tile_config(dim, backward=False, N=1):
    """(BT, BD, VEC, num_warps) of the forward or backward kernels.

    Forward: VEC = 4 channels per thread, so every position is one 8-byte (half) or 16-byte (fp32) vector load
    per thread and each [BT, BD] tile holds 32 fp32 registers per thread. Backward: VEC = 2 (its ten live tiles
    would not fit 255 registers at 4) and at most 2 warps (4 warps spilled more at stage 4, and reduce dB/dC
    across more warps through shared memory). For N > 1 the backward takes all channels in one block of up to
    4 warps when at most a quarter of it is padding (vanilla stage 1: 192 of 256): with several blocks and half
    B/C, dB/dC are summed over the blocks in fp32 buffers of 2 x 4N floats per position (24 % of the op's inputs
    at D = 192, N = 16).
    """
    vec = 2 if backward else 4
    if backward and N > 1:
        bd = 32 * vec * 4  # 256 channels, 4 warps
        if 3 * bd <= 4 * dim <= 4 * bd:  # one block, at most a quarter of it padding
            return CHUNK, bd, vec, 4
    bd, warps = _channel_block(dim, vec, 2 if backward else 4, backward)
    return CHUNK, bd, vec, warps


def _chunks_per_program(n_chunks, rows, sm_count, target_per_sm=16):
    """Chunks each program walks: 1 when the grid would otherwise be too small to fill the device."""
    if sm_count == 0:  # interpreter: few, long programs
        return n_chunks
    per = max(1, (rows * n_chunks) // (sm_count * target_per_sm))
    return min(per, n_chunks)


#: The backward's per-program partial sums (dA, d(delta_bias), dD: 9 D N-ish floats per program) may take at most
#: this fraction of the op's input bytes; on small maps (7x7, 14x14) that means fewer, longer programs.
PARTIALS_FRACTION = 0.03


def bwd_chunks_per_program(n_chunks, batch, L, dim, N, in_size, sm_count):
    """Chunks per backward program: enough programs to fill the device, few enough that the partial sums stay
    within PARTIALS_FRACTION of the inputs."""
    per = _chunks_per_program(n_chunks, batch, sm_count, target_per_sm=8)
    partial = (4 * dim * N + 5 * dim) * 4  # bytes per program and image
    budget = PARTIALS_FRACTION * L * (5 * dim + 8 * N) * in_size
    max_programs = max(1, int(budget // partial))
    return min(n_chunks, max(per, -(-n_chunks // max_programs)))


def segments(batch, L, dim, N, in_size, sm_count):
    """(cpp, n_segs, fsegs_per_bseg, bwd_cpp, n_bsegs): chunks per forward segment and their count, forward
    segments per backward segment, chunks per backward segment and their count (see :class:`_Plan`)."""
    BT, BD, _, _ = tile_config(dim)
    n_chunks = triton.cdiv(L, BT)
    cpp = _chunks_per_program(n_chunks, batch * triton.cdiv(dim, BD), sm_count)
    fsegs_per_bseg = triton.cdiv(bwd_chunks_per_program(n_chunks, batch, L, dim, N, in_size, sm_count), cpp)
    bwd_cpp = min(n_chunks, fsegs_per_bseg * cpp)
    return cpp, triton.cdiv(n_chunks, cpp), fsegs_per_bseg, bwd_cpp, triton.cdiv(n_chunks, bwd_cpp)


#: Tests may force the superchunk length (chunks per stored adjoint entry, N > 1); None: :func:`superchunk`.
SUPERCHUNK = None


def superchunk(n_chunks, bwd_cpp, n_bsegs, N):
    """Chunks per stored adjoint entry of the forward routes in the backward (1 for N = 1).

    For N > 1 the entries of every chunk would take 2 N fp32 per channel and chunk (1.2 GB for vanilla stage 1 at
    batch 128, 1.4x the op's inputs); the backward main kernel instead recomputes a superchunk's K entries from its
    stored one into a per-program scratch of K entries. Entries ~ n_chunks / K, scratch ~ n_bsegs * K: K near
    sqrt(2 n_chunks / n_bsegs) keeps their sum near its minimum."""
    if SUPERCHUNK is not None:
        return max(1, min(SUPERCHUNK, bwd_cpp))
    if N == 1:
        return 1
    return max(1, min(bwd_cpp, round((2 * n_chunks / n_bsegs) ** 0.5)))


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


class _Plan:
    """Launch geometry shared by the forward and the backward of one call.

    The sequence of each pair is cut into ``n_segs`` segments of ``cpp`` chunks, one program per (segment,
    channel block, image): as many as fill the device, one segment per sequence when the batch alone does
    (then no segment carry and no decay sums are needed: ``TWO_LEVEL`` is off). A backward segment is a whole
    number ``fsegs_per_bseg`` of forward segments, so that its programs start from a saved segment entry.
    """

    def __init__(self, x, A, sm_count=None):
        self.batch, self.H, self.W, self.dim = x.shape
        self.L = self.H * self.W
        self.N = A.shape[1]
        self.BN = triton.next_power_of_2(self.N)
        self.sm = _sm_count(x.device) if sm_count is None else sm_count
        self.BT, self.BD, self.VEC, self.warps = tile_config(self.dim)
        _, self.bwd_BD, self.bwd_VEC, self.bwd_warps = tile_config(self.dim, backward=True, N=self.N)
        self.n_chunks = triton.cdiv(self.L, self.BT)
        self.n_blocks = triton.cdiv(self.dim, self.BD)
        self.bwd_blocks = triton.cdiv(self.dim, self.bwd_BD)
        (self.cpp, self.n_segs, self.fsegs_per_bseg, self.bwd_cpp,
         self.n_bsegs) = segments(self.batch, self.L, self.dim, self.N, x.element_size(), self.sm)
        # the forward routes' adjoint entries: one per superchunk of K chunks (see _bwd_kernel), n_sc per segment
        self.K = superchunk(self.n_chunks, self.bwd_cpp, self.n_bsegs, self.N)
        self.n_sc = triton.cdiv(self.bwd_cpp, self.K)
        self.n_qrows = (self.n_bsegs - 1) * self.n_sc + triton.cdiv(self.n_chunks - (self.n_bsegs - 1) * self.bwd_cpp,
                                                                    self.K)
        self.carry_blk = 128

    def grid(self, backward=False):
        return (self.n_bsegs if backward else self.n_segs, self.n_blocks, self.batch)

    def flags(self, delta_bias, delta_softplus, backward=False):
        bd, vec, warps = ((self.bwd_BD, self.bwd_VEC, self.bwd_warps) if backward else
                          (self.BD, self.VEC, self.warps))
        flags = dict(HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus), BT=self.BT, BD=bd, VEC=vec,
                     BN=self.BN, WRAP=self.H % self.BT != 0, num_warps=warps)
        if backward:
            flags['RECOMPUTE'] = self.K > 1
        return flags

    def summary_flags(self, delta_bias, delta_softplus):
        """Flags of the backward's summary launch: the forward's tiles, the backward's segments and superchunks."""
        return dict(self.flags(delta_bias, delta_softplus), TWO_LEVEL=self.n_bsegs > 1, RECOMPUTE=self.K > 1)

    def carry(self, states, sums, A, adjoint, n_segs):
        dn = self.dim * self.N
        _carry_kernel[(triton.cdiv(dn, self.carry_blk), 4, self.batch)](
            states, sums, A, self.dim, self.N, n_segs, ADJOINT=adjoint, CB=16, BLK=self.carry_blk,
            num_warps=4)


def meta_plan(batch, H, W, D, N, dtype, sm_count):
    """(x, A, plan) of a call on x (batch, H, W, D) of ``dtype`` with d_state N on a device with ``sm_count``
    SMs, x and A as meta tensors (nothing allocated): for the tools that compile or price the kernels."""
    x = torch.empty(batch, H, W, D, device='meta', dtype=dtype)
    A = torch.empty(4 * D, N, device='meta')
    return x, A, _Plan(x, A, sm_count)


def bwd_workspaces(p, B_dtype):
    """name -> (shape, dtype) of every buffer :func:`ss2d_bwd` allocates beyond its outputs, for plan ``p``; the
    traffic model (vmamba/analysis/scan_traffic.py) prices the backward's extra memory from this."""
    f32 = torch.float32
    w = {'adjoint_entries': ((p.batch, p.n_qrows, 2, p.dim, p.N), f32)}  # forward routes', every superchunk
    if p.K > 1:  # a superchunk's entries, recomputed by the main kernel (see superchunk)
        w['entry_scratch'] = ((p.batch, p.n_bsegs, p.K, p.dim, p.N), f32)
    if p.n_bsegs > 1:  # segment summaries, then entries; their decay sums and the compensation terms
        w['segments'] = ((p.batch, p.n_bsegs, 4, p.dim, p.N), f32)
        w['segment_decay'] = ((p.batch, p.n_bsegs, 4, p.dim), f32)
        w['segment_lo'] = ((p.batch, p.n_bsegs, 2, p.dim), f32)
    if p.N > 1:  # the carried values (see _carried)
        w['scratch'] = ((p.batch, p.n_bsegs, 2, p.dim, p.N), f32)
    w['partial_A'] = ((p.batch, p.n_bsegs, 4, p.dim, p.N), f32)
    w['partial_D'] = ((p.batch, p.n_bsegs, p.dim), f32)
    w['partial_bias'] = ((p.batch, p.n_bsegs, 4, p.dim), f32)
    if p.bwd_blocks > 1 and B_dtype != f32:  # dB/dC summed over channel blocks in fp32, then cast
        w['dB_sum'] = w['dC_sum'] = ((p.batch, p.H, p.W, 4, p.N), f32)
    return w


def ss2d_saved_like(x, delta, A, B, C, sm_count=None):
    """Empty tensors shaped as what :func:`ss2d_fwd` saves (for the custom op's fake implementation and the
    traffic model); ``sm_count`` overrides the device's."""
    p = _Plan(x, A, sm_count)
    return (x.new_empty((p.batch, p.n_chunks, 2, p.dim, p.N), dtype=torch.float32),
            x.new_empty((p.batch, p.n_segs, 4, p.dim, p.N), dtype=torch.float32))


def ss2d_fwd(x, delta, A, B, C, D, delta_bias, delta_softplus):
    """Fused SS2D forward on channels-last operands: returns (y (batch, H, W, D) fp32, saved tensors).

    Saved: the reverse routes' state entering every chunk (batch, n_chunks, 2, D, N) and every route's state
    entering every segment (batch, n_segs, 4, D, N)."""
    x, delta, B, C = _prepare(x, delta, B, C)
    p = _Plan(x, A)
    A, D, delta_bias, dummy = _params(A, D, delta_bias, x)
    dev = x.device
    two = p.n_segs > 1
    f32 = lambda *shape: torch.empty(*shape, device=dev, dtype=torch.float32)  # noqa: E731
    entries = f32(p.batch, p.n_chunks, 2, p.dim, p.N)
    seg = f32(p.batch, p.n_segs, 4, p.dim, p.N)  # segment summaries, then (after the carry) entries
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
        p.carry(seg, seg_decay, A, adjoint=False, n_segs=p.n_segs)
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
    p = _Plan(x, A)
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
        p.carry(adj_seg, adj_seg_decay, A, adjoint=True, n_segs=p.n_bsegs)
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
