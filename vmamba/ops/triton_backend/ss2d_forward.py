"""The SS2D forward kernels: the summary walk (bottom-up) and the main walk (top-down) of one route pair.

A program owns one pair on one segment and channel block. The route that runs its way (top-down: routes 0 and 1)
is carried in registers from chunk to chunk and needs no stored states; the reverse route needs the state
entering each chunk from below, which the summary launch stores first (from a zero start at the segment's end).
With several segments the summary launch also writes each segment's summary, the carry kernel
(:func:`.ss2d_shared._carry_kernel`) turns them into segment entries, and the main launch makes every stored
entry exact with one multiply-add. The row pair writes y, the column pair (launched after it) adds to it: a fixed
sum order, no atomics.
"""
import triton
import triton.language as tl

from .ss2d_shared import (_carried_row, _carry_get, _carry_set, _channels, _exp2, _load_states, _pick, _rate,
                          _route_vector, _rows, _scan_states, _step_sizes, _sum_add, _summary_end,
                          _summary_start)


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
    kf, kr = PAIR, PAIR + 2
    # hr: the reverse route's state entering the chunk; sf: the forward route's end state of the chunks below,
    # from a zero start
    j, b, d, md, offs_n, bias_f, bias_r, slot, hr, sf, Af_tile, Ar_tile, c0, c1 = _summary_start(
        bias_ptr, A_ptr, scr_ptr, Dm, N, n_chunks, chunks_per_prog, n_segs, PAIR, HAS_BIAS, BD, VEC, BN)
    sum_r = tl.zeros([BD], dtype=tl.float32)   # decay sums of the chunks below the current one
    lo_r = tl.zeros([BD], dtype=tl.float32)
    sum_f = tl.zeros([BD], dtype=tl.float32)
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
        _summary_end(sf, slot + 1, hr, slot, sum_f, sum_r, lo_r, scr_ptr, seg_ptr, segs_ptr, lo_ptr, b, j, n_segs,
                     Dm, N, d, md, offs_n, PAIR, BN)



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

