"""The @triton.jit pieces the SS2D kernels of both directions share, and the segment carry kernel they both launch.

Why these are shared: the forward and the backward walk the same tiles (:func:`_rows`, :func:`_channels`), form
the same step sizes (:func:`_step_sizes`, :func:`_softplus`), run the same two register recurrences (the state,
:func:`_scan_states`, and its adjoint, :func:`_scan_adjoint`), carry values from chunk to chunk the same way
(:func:`_carried` and friends: registers for N = 1, a per-program scratch row for larger N, where N registers per
channel and value would spill) and keep their decay sums compensated the same way (:func:`_sum_add`). Their
summary launches open and close alike (:func:`_summary_start`, :func:`_summary_end`): one walk bottom-up over a
segment with a value carried for each route of the pair. Triton inlines every helper into its kernel, so the
split costs no instruction.

On the GPU exp2/log2 are one MUFU instruction each (tl.exp/tl.log lower to ~5 / ~15 instructions with denormal
handling); the interpreter, which has no approximate units, runs the same maths exactly.
"""
import triton
import triton.language as tl

from .plan import INTERPRET

LOG2E = 1.4426950408889634
_LOG2E = tl.constexpr(LOG2E)
_LN2 = tl.constexpr(0.6931471805599453)


if INTERPRET:  # numpy has no approximate units; the interpreter runs the same maths exactly
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
#: ``reverse=True`` instead (its tl.flip is slow).
_FLIP = tl.constexpr(not INTERPRET)


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



@triton.jit
def _summary_start(bias_ptr, A_ptr, scr_ptr, Dm, N, n_chunks, chunks_per_prog, n_segs, PAIR: tl.constexpr,
                   HAS_BIAS: tl.constexpr, BD: tl.constexpr, VEC: tl.constexpr, BN: tl.constexpr):
    """The opening of both summary kernels, which walk their segment's chunks bottom-up: this program's segment
    ``j``, image ``b``, channels ``d`` (valid ``md``), the pair's step-size biases and A tiles (forward route kf =
    PAIR, reverse route kr = PAIR + 2), its scratch slot, the two carried values (slot, slot + 1) started at
    zero, and the chunk range [c0, c1)."""
    j = tl.program_id(0)
    b = tl.program_id(2).to(tl.int64)
    d, md = _channels(tl.program_id(1), Dm, BD, VEC)
    offs_n = tl.arange(0, BN)
    kf, kr = PAIR, PAIR + 2
    bias_f = _route_vector(bias_ptr, kf, Dm, d, md, HAS_BIAS, BD)
    bias_r = _route_vector(bias_ptr, kr, Dm, d, md, HAS_BIAS, BD)
    zero = tl.zeros([BN, BD], dtype=tl.float32)
    slot = (b * n_segs + j) * 2
    first = _carried(zero, scr_ptr, slot, Dm, N, d, md, offs_n, BN)
    second = _carried(zero, scr_ptr, slot + 1, Dm, N, d, md, offs_n, BN)
    Af_tile = _load_states(A_ptr, kf, Dm, N, d, md, offs_n)
    Ar_tile = _load_states(A_ptr, kr, Dm, N, d, md, offs_n)
    c0 = j * chunks_per_prog
    c1 = tl.minimum(c0 + chunks_per_prog, n_chunks)
    return j, b, d, md, offs_n, bias_f, bias_r, slot, first, second, Af_tile, Ar_tile, c0, c1


@triton.jit
def _summary_end(carried_f, slot_f, carried_r, slot_r, sum_f, sum_r, lo, scr_ptr, seg_ptr, segs_ptr, lo_ptr,
                 b, j, n_segs, Dm, N, d, md, offs_n, PAIR: tl.constexpr, BN: tl.constexpr):
    """The close of both summary kernels with several segments: each route's segment summary (the carried value
    as a (.., D, N) row, its decay sum) and the compensation term ``lo`` of the compensated route's sum."""
    kf, kr = PAIR, PAIR + 2
    row = (b * n_segs + j) * 4
    _carry_save(carried_f, scr_ptr, slot_f, seg_ptr, row + kf, Dm, N, d, md, offs_n, BN)
    _carry_save(carried_r, scr_ptr, slot_r, seg_ptr, row + kr, Dm, N, d, md, offs_n, BN)
    tl.store(segs_ptr + (row + kf) * Dm + d, sum_f, mask=md)
    tl.store(segs_ptr + (row + kr) * Dm + d, sum_r, mask=md)
    tl.store(lo_ptr + ((b * n_segs + j) * 2 + PAIR) * Dm + d, lo, mask=md)


# ------------------------------------------------------------------------------------------------ segment carry
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

