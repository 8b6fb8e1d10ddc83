"""The SS2D backward kernels: the adjoint summary walk (bottom-up) and the main walk (top-down) of one route pair.

The adjoint ``q = a * dL/dh`` obeys the same kind of recurrence as the state, run the other way, so the backward
has the forward's structure: a summary launch stores the forward route's adjoint entries (and, with several
segments, both routes' adjoint segment summaries for the carry kernel), then one main kernel per pair walks
top-down carrying the forward route's state and the reverse route's adjoint and forms every gradient in registers.

Why the main kernel loops over the channel blocks itself: dB and dC are sums over channels, and summing them inside
the program needs no workspace that grows with channel blocks x N x L. Why superchunks (N > 1): the forward
route's adjoint entries of every chunk would be N times larger per chunk than for N = 1 (1.4x the op's inputs for
vanilla stage 1), so they are stored once per K chunks and :func:`_adjoint_entries` recomputes the K in between,
with the summary kernel's own arithmetic, into a per-program scratch. dA, dD and d(delta_bias) are summed per
program and reduced on the host in a fixed order: deterministic, no atomics.
"""
import triton
import triton.language as tl

from .ss2d_shared import (_LN2, _LOG2E, _carried_row, _carry_get, _carry_set, _channels, _exp2, _load_states,
                          _pick, _rate, _route_vector, _rows, _scan_adjoint, _scan_states, _step_sizes, _sum_add,
                          _summary_end, _summary_start)


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
    kf, kr = PAIR, PAIR + 2
    # qf: the forward route's adjoint entering the chunk; sr: the reverse route's adjoint leaving the chunks
    # below, from a zero start
    j, b, d, md, offs_n, bias_f, bias_r, slot, qf, sr, Af_tile, Ar_tile, c0, c1 = _summary_start(
        bias_ptr, A_ptr, scr_ptr, Dm, N, n_chunks, chunks_per_prog, n_segs, PAIR, HAS_BIAS, BD, VEC, BN)
    sum_f = tl.zeros([BD], dtype=tl.float32)   # decay sums of the chunks below the current one
    lo_f = tl.zeros([BD], dtype=tl.float32)
    sum_r = tl.zeros([BD], dtype=tl.float32)
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
        _summary_end(qf, slot, sr, slot + 1, sum_f, sum_r, lo_f, scr_ptr, seg_ptr, segs_ptr, lo_ptr, b, j, n_segs,
                     Dm, N, d, md, offs_n, PAIR, BN)


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

