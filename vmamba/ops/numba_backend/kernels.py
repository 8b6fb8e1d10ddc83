"""The numba kernels of the compiled CPU scan: forward, backward, and the block sum of dB / dC.

Design
------
* **Channels-last, SIMD over channels.** One *program* owns one batch element and a block of at most ``CB`` = 64
  consecutive channels of one B/C group (4 cache lines of fp32 per position), for every route of that group. It
  walks the route's positions; the innermost loops run over the block's (contiguous) channels, which LLVM
  vectorises. B_t / C_t are scalars broadcast over the block.
* **Fused SS2D.** The four routes are read in place through index tables (row-major and column-major positions,
  walked forwards for routes 0/1 and backwards for 2/3): no cross-scanned copies, strided operands (slices of
  one x_proj output, route-major delta) read through their strides. A program does its routes one after the
  other and owns its slice of the merged y (every route adds into it): no atomics, no ``(4, ...)``
  intermediate.
* **Strips of positions, so the transcendentals pipeline.** The recurrence itself is two FMAs per state; the
  cost is in softplus and exp, long dependency chains. Each route is processed in strips of ``STRIP`` positions:
  (1) gather the strip's delta + bias and u into scratch (software-prefetching the next strip's cache lines),
  (2) softplus over the whole strip in one flat loop and (3) the decays ``exp(Δ A)`` for the whole strip, both
  loops of independent elements, compiled with a forced LLVM interleave factor of 4 so that four vectors' chains
  are in flight (:func:`compile_flat_loops`), and (4) the sequential recurrence, now cheap. The per-position
  scalar work (offsets, loop set-up) is spread over the 64-channel block.
* **Backward recomputes, segment by segment.** Per program and route the sequence is cut into *segments* of
  ``T`` positions (a multiple of ``STRIP``; states, decays, Δ, u, sigmoid for ``T`` positions are the scratch of
  one thread, :func:`segment_len` on the host). One forward pass stores the state entering each segment (only
  when there is more than one); then the segments are taken in reverse: recompute the segment (same pipeline),
  run the adjoint ``g_t = C_t dy_t + exp(Δ_{t+1} A) g_{t+1}`` backwards through it and form all gradients; no
  transcendental in the adjoint loop. Nothing is saved by the forward; scratch is per thread, never
  ``(..., N, L)``-sized.
* **Deterministic, independent of the thread count.** The forward is per-channel arithmetic. The backward's
  split is fixed by the sizes only, and every reduction has a fixed order: dB_t / dC_t are summed over a block's
  channels in a fixed order, written per block and summed over blocks in block order (:func:`sum_blocks`); dA,
  dD and d(delta_bias) are summed per program (fp32 within a segment, fp64 across segments) and written per
  batch element for the host to sum in order.
* **One compilation per kernel.** Every kernel takes 1-D fp32 buffers + int64 strides and is called with no
  literal constants (a literal argument would specialise a callee per value). Task kernels (``p0, p1`` first:
  the programs or elements of one task) annotate their other parameters with their numba types: that
  signature is the one declaration of the argument block :mod:`.team` packs and unpacks.
"""
import llvmlite.binding as llvm
import numpy as np
from numba import njit, types

from .fastmath import LN2, LOG2E, ONE, ZERO, fsigmoid, fsoftplus, fexp2, prefetch
from .jit import COMPILE_LOCK, JIT

__all__ = ['CB', 'STRIP', 'SEGMENT_FLOATS', 'fwd_programs', 'bwd_programs', 'sum_blocks', 'compile_flat_loops']

#: Largest channel block of a program (a compile-time constant of the kernels).
CB = 64
#: Positions per strip: gathered, then softplus'd and exp'd in flat loops, then recurred (forward and
#: backward recompute).
STRIP = 32
#: Scratch of one backward segment, in floats: T positions x (2 N + 5) x CB (states, decays, 5 per-channel rows).
SEGMENT_FLOATS = 65536

_U = np.uint64  # unsigned indices: numba then adds no negative-index wraparound, so the loops vectorise
# parameter types of the task kernels (see the module docstring)
_INT, _BOOL = types.int64, types.boolean
_F32, _F64, _I64, _I64_2D = types.float32[::1], types.float64[::1], types.int64[::1], types.int64[:, ::1]

# ------------------------------------------------------------------------------------------------------------
# Flat loops over independent elements, compiled with a forced interleave factor (see compile_flat_loops).
# Row k of a strip (or segment) buffer holds position k's CB channels.
# ------------------------------------------------------------------------------------------------------------
@njit(**JIT)
def _delta_rows(Z, DT, DU, UU, ne, softplus):
    """DT = softplus(Z) (or Z), DU = DT * UU for the rows' ne = rows * CB elements."""
    if softplus:
        for e in range(ne):
            d = fsoftplus(Z[e])
            DT[e] = d
            DU[e] = d * UU[e]
    else:
        for e in range(ne):
            d = Z[e]
            DT[e] = d
            DU[e] = d * UU[e]


@njit(**JIT)
def _sigmoid_rows(Z, SG, ne, softplus):
    """SG = dΔ / d(delta + bias): sigmoid(Z) (or 1)."""
    if softplus:
        for e in range(ne):
            SG[e] = fsigmoid(Z[e])
    else:
        for e in range(ne):
            SG[e] = ONE


@njit(**JIT)
def _decay_rows(DT, AT, AD, rows, N, stride):
    """AD[(n * stride + k) * CB + c] = 2^(DT[k, c] AT[n, c]) = exp(Δ A) for the given rows."""
    for n in range(N):
        for k in range(rows):
            base = (n * stride + k) * CB
            for c in range(CB):
                AD[_U(base + c)] = fexp2(DT[_U(k * CB + c)] * AT[_U(n * CB + c)])


_FLAT_LOOP_SIGS = (
    (_delta_rows, (_F32,) * 4 + (_INT, _BOOL)),
    (_sigmoid_rows, (_F32,) * 2 + (_INT, _BOOL)),
    (_decay_rows, (_F32,) * 3 + (_INT,) * 3),
)
_COMPILED = []


def compile_flat_loops():
    """Compile (or load from cache) the flat loops with LLVM's ``-force-vector-interleave=4`` (4 vectors per
    iteration, so that their long exp/log chains overlap), before the kernels that call them are compiled, then
    restore the default. A process-wide LLVM option, set only here, under the package's compile lock."""
    with COMPILE_LOCK:
        if _COMPILED:
            return
        llvm.set_option('', '-force-vector-interleave=4')
        try:
            for fn, sig in _FLAT_LOOP_SIGS:
                fn.compile(sig)
        finally:
            llvm.set_option('', '-force-vector-interleave=0')
        _COMPILED.append(True)


# ------------------------------------------------------------------------------------------------------------
# Kernels. Operands are 1-D fp32 buffers with int64 strides, channel stride 1. A program = (b, g, block of
# channels c0 .. c0 + cw - 1 of group g); it runs the R routes of its group one after the other. Position t of
# route r (layout r % 2, reversed when r >= 2) is the spatial point (ii[lay, t'], jj[lay, t']).
#   x / dx / y / dy: [b, i, j, g*Dg + c]                strides xs / dxs / ys / dys = (b, i, j)
#   delta / ddelta:  [b, i, j, slot, c], slot = g*R + r  strides ds / dds = (b, i, j, slot)
#   B, C:            [b, i, j, slot, n]                  strides bs, cs = (b, i, j, slot, n)
#   A:               [(slot*Dg + c)*N + n];  D, bias: [slot*Dg + c]
#   dB/dC partials:  [blk, b, i*W + j, slot, n] contiguous (blk = 0 is the output itself when nblk == 1)
# Scratch lanes c >= cw are kept at zero inputs (Δ = softplus(0), u = 0, A = 0): they compute h = 0, never NaN
# or denormals, so every scratch loop can run over the full CB lanes.
# ------------------------------------------------------------------------------------------------------------
@njit(**JIT)
def _gather(t0, tn, L, r, lay, ii, jj, b, g, slot, Dg, c0, cw, x, xs, dl, ds, Bm, bs, Cm, cs, yp, yps, BV, Z, UU):
    """Rows 0 .. tn-1 of Z / UU = delta + bias / u at positions t0 .. t0 + tn - 1 of route r; prefetches this
    strip's yp lines (y or dy) and the next strip's x / delta / B / C lines."""
    for k in range(tn):
        t = t0 + k
        tt = L - 1 - t if r >= 2 else t
        i = ii[lay, tt]
        j = jj[lay, tt]
        xo = b * xs[0] + i * xs[1] + j * xs[2] + g * Dg + c0
        do = b * ds[0] + i * ds[1] + j * ds[2] + slot * ds[3] + c0
        yo = b * yps[0] + i * yps[1] + j * yps[2] + g * Dg + c0
        for c in range(0, cw, 16):
            prefetch(yp, _U(yo + c))
        tp = t + STRIP
        if tp < L:
            tt = L - 1 - tp if r >= 2 else tp
            i2 = ii[lay, tt]
            j2 = jj[lay, tt]
            xo2 = b * xs[0] + i2 * xs[1] + j2 * xs[2] + g * Dg + c0
            do2 = b * ds[0] + i2 * ds[1] + j2 * ds[2] + slot * ds[3] + c0
            for c in range(0, cw, 16):
                prefetch(x, _U(xo2 + c))
                prefetch(dl, _U(do2 + c))
            prefetch(Bm, _U(b * bs[0] + i2 * bs[1] + j2 * bs[2] + slot * bs[3]))
            prefetch(Cm, _U(b * cs[0] + i2 * cs[1] + j2 * cs[2] + slot * cs[3]))
        for c in range(cw):
            Z[_U(k * CB + c)] = dl[_U(do + c)] + BV[c]
            UU[_U(k * CB + c)] = x[_U(xo + c)]


@njit(**JIT)
def _load_params(A, Dp, bias, prow, cw, N, AT, BV, DV):
    for c in range(cw):
        BV[c] = bias[prow + c]
        DV[c] = Dp[prow + c]
        for n in range(N):
            AT[n * CB + c] = A[(prow + c) * N + n] * LOG2E


@njit(**JIT)
def fwd_programs(p0, p1, bw: _INT, x: _F32, xs: _I64, dl: _F32, ds: _I64, Bm: _F32, bs: _I64, Cm: _F32, cs: _I64,
                 A: _F32, Dp: _F32, bias: _F32, y: _F32, ys: _I64, ii: _I64_2D, jj: _I64_2D,
                 G: _INT, R: _INT, Dg: _INT, N: _INT, L: _INT, softplus: _BOOL):
    """Forward programs p0 .. p1 - 1 (block width bw; y must be zero on entry)."""
    nblk = (Dg + bw - 1) // bw
    strip = np.int64(STRIP)  # not a literal: a literal argument would compile a second specialisation of the callee
    AT = np.zeros(N * CB, np.float32)
    H = np.zeros(N * CB, np.float32)
    BV = np.zeros(CB, np.float32)
    DV = np.zeros(CB, np.float32)
    ACC = np.zeros(CB, np.float32)
    Z = np.zeros(STRIP * CB, np.float32)
    UU = np.zeros(STRIP * CB, np.float32)
    DT = np.zeros(STRIP * CB, np.float32)
    DU = np.zeros(STRIP * CB, np.float32)
    AD = np.zeros(N * STRIP * CB, np.float32)
    for prog in range(p0, p1):
        b = prog // (G * nblk)
        g = (prog // nblk) % G
        c0 = (prog % nblk) * bw
        cw = min(bw, Dg - c0)
        Z[:] = ZERO
        UU[:] = ZERO
        AT[:] = ZERO
        for r in range(R):
            slot = g * R + r
            _load_params(A, Dp, bias, slot * Dg + c0, cw, N, AT, BV, DV)
            H[:] = ZERO
            lay = r % 2
            for t0 in range(0, L, STRIP):
                tn = min(STRIP, L - t0)
                _gather(t0, tn, L, r, lay, ii, jj, b, g, slot, Dg, c0, cw, x, xs, dl, ds, Bm, bs, Cm, cs, y, ys,
                        BV, Z, UU)
                _delta_rows(Z, DT, DU, UU, tn * CB, softplus)
                _decay_rows(DT, AT, AD, tn, N, strip)
                for k in range(tn):  # the recurrence
                    t = t0 + k
                    tt = L - 1 - t if r >= 2 else t
                    i = ii[lay, tt]
                    j = jj[lay, tt]
                    bo = b * bs[0] + i * bs[1] + j * bs[2] + slot * bs[3]
                    co = b * cs[0] + i * cs[1] + j * cs[2] + slot * cs[3]
                    yo = b * ys[0] + i * ys[1] + j * ys[2] + g * Dg + c0
                    for c in range(CB):
                        ACC[c] = DV[c] * UU[_U(k * CB + c)]
                    for n in range(N):
                        Bn = Bm[bo + n * bs[4]]
                        Cn = Cm[co + n * cs[4]]
                        for c in range(CB):
                            v = AD[_U((n * STRIP + k) * CB + c)] * H[_U(n * CB + c)] + DU[_U(k * CB + c)] * Bn
                            H[_U(n * CB + c)] = v
                            ACC[c] += v * Cn
                    for c in range(cw):
                        y[_U(yo + c)] += ACC[c]


# Backward scratch, laid out so that the adjoint loop touches few distinct arrays (LLVM's runtime alias checks
# grow with their pairs and it stops vectorising past 8): per-channel vectors in V (row q at q * CB), per-state
# rows in M ([n][slot][c]), the segment's per-position rows in Q (region X at X * T * CB, row k at k * CB).
_VBV, _VDV, _VDY, _VGB, _VDDA, _VTB, _VTC, _VDDC, _VDBC, _VP8 = [q * CB for q in range(10)]
_MH, _MA, _MG, _MD = 0, CB, 2 * CB, 3 * CB
_MS = 4 * CB


@njit(**JIT)
def bwd_programs(p0, p1, bw: _INT, x: _F32, xs: _I64, dl: _F32, ds: _I64, Bm: _F32, bs: _I64, Cm: _F32, cs: _I64,
                 A: _F32, Dp: _F32, bias: _F32, dy: _F32, dys: _I64, ii: _I64_2D, jj: _I64_2D,
                 dx: _F32, dxs: _I64, ddl: _F32, dds: _I64, dA_p: _F64, dD_p: _F64, dbias_p: _F64,
                 dB_p: _F32, dC_p: _F32,
                 batch: _INT, G: _INT, R: _INT, Dg: _INT, N: _INT, L: _INT, W: _INT, T: _INT, softplus: _BOOL):
    """Backward programs p0 .. p1 - 1 (block width bw; dx must be zero on entry); see the module docstring.
    T (segment length) is a multiple of STRIP. Per route: steps 0 .. n_segs - 2 run the segments forwards and keep
    the state entering each next segment; then every segment, last first, is recomputed and run backwards."""
    nblk = (Dg + bw - 1) // bw
    n_segs = (L + T - 1) // T
    NC = N * CB
    TC_ = T * CB
    S_ = G * R
    oU, oDT, oDU, oSG = TC_, 2 * TC_, 3 * TC_, 4 * TC_
    V = np.zeros(10 * CB, np.float32)
    M = np.zeros(N * _MS, np.float32)
    AT = np.zeros(NC, np.float32)
    Hc = np.zeros(NC, np.float32)
    Q = np.zeros(5 * TC_, np.float32)   # the segment's rows: delta + bias, u, Δ, Δu, sigmoid
    AD = np.zeros(N * TC_, np.float32)  # its decays
    HS = np.zeros((T + 1) * NC, np.float32)  # its states: row k + 1 after position k, row 0 entering
    ckpt = np.zeros(n_segs * NC, np.float32)
    dA_t = np.zeros(NC, np.float64)
    dD_t = np.zeros(CB, np.float64)
    db_t = np.zeros(CB, np.float64)
    Z = Q[0:TC_]
    UU = Q[oU:oU + TC_]
    DT = Q[oDT:oDT + TC_]
    DU = Q[oDU:oDU + TC_]
    SG = Q[oSG:oSG + TC_]
    BV = V[_VBV:_VBV + CB]
    DV = V[_VDV:_VDV + CB]
    for prog in range(p0, p1):
        b = prog // (G * nblk)
        g = (prog // nblk) % G
        blk = prog % nblk
        c0 = blk * bw
        cw = min(bw, Dg - c0)
        Q[:] = ZERO
        V[:] = ZERO
        AT[:] = ZERO
        for r in range(R):
            slot = g * R + r
            prow = slot * Dg + c0
            _load_params(A, Dp, bias, prow, cw, N, AT, BV, DV)
            for q in range(NC):
                M[(q // CB) * _MS + _MA + q % CB] = AT[q]
                M[(q // CB) * _MS + _MG + q % CB] = ZERO
            lay = r % 2
            dA_t[:] = 0.0
            dD_t[:] = 0.0
            db_t[:] = 0.0
            for step in range(2 * n_segs - 1):
                forward = step < n_segs - 1
                seg = step if forward else 2 * n_segs - 2 - step
                t0 = seg * T
                tn = min(L, t0 + T) - t0
                # recompute the segment: rows of Q, decays, states
                Hc[:] = ckpt[seg * NC:(seg + 1) * NC]
                for k0 in range(0, tn, STRIP):
                    _gather(t0 + k0, min(STRIP, tn - k0), L, r, lay, ii, jj, b, g, slot, Dg, c0, cw, x, xs, dl, ds,
                            Bm, bs, Cm, cs, dy, dys, BV, Z[k0 * CB:], UU[k0 * CB:])
                if not forward:
                    _sigmoid_rows(Z, SG, tn * CB, softplus)
                _delta_rows(Z, DT, DU, UU, tn * CB, softplus)
                _decay_rows(DT, AT, AD, tn, N, T)
                HS[:NC] = Hc
                for k in range(tn):
                    t = t0 + k
                    tt = L - 1 - t if r >= 2 else t
                    bo = b * bs[0] + ii[lay, tt] * bs[1] + jj[lay, tt] * bs[2] + slot * bs[3]
                    for n in range(N):
                        Bn = Bm[bo + n * bs[4]]
                        for c in range(CB):
                            v = AD[_U((n * T + k) * CB + c)] * Hc[_U(n * CB + c)] + DU[_U(k * CB + c)] * Bn
                            Hc[_U(n * CB + c)] = v
                            HS[_U((k + 1) * NC + n * CB + c)] = v
                if forward:
                    ckpt[(seg + 1) * NC:(seg + 2) * NC] = Hc
                    continue
                # the adjoint scan backwards through the segment; M[G] carries exp(Δ_{t+1} A) g_{t+1}
                for q in range(NC):
                    M[(q // CB) * _MS + _MD + q % CB] = ZERO
                for c in range(CB):
                    V[_VDDC + c] = ZERO
                    V[_VDBC + c] = ZERO
                for k in range(tn - 1, -1, -1):
                    t = t0 + k
                    tt = L - 1 - t if r >= 2 else t
                    i = ii[lay, tt]
                    j = jj[lay, tt]
                    bo = b * bs[0] + i * bs[1] + j * bs[2] + slot * bs[3]
                    co = b * cs[0] + i * cs[1] + j * cs[2] + slot * cs[3]
                    yo = b * dys[0] + i * dys[1] + j * dys[2] + g * Dg + c0
                    xgo = b * dxs[0] + i * dxs[1] + j * dxs[2] + g * Dg + c0
                    dgo = b * dds[0] + i * dds[1] + j * dds[2] + slot * dds[3] + c0
                    po = (((blk * batch + b) * L + i * W + j) * S_ + slot) * N
                    for c in range(cw):
                        V[_VDY + c] = dy[_U(yo + c)]
                    for c in range(CB):
                        V[_VGB + c] = ZERO
                        V[_VDDA + c] = ZERO
                    qk = k * CB
                    for n in range(N):
                        Bn = Bm[bo + n * bs[4]]
                        Cn = Cm[co + n * cs[4]]
                        m = n * _MS
                        ak = (n * T + k) * CB
                        hp = k * NC + n * CB
                        for c in range(CB):
                            gv = M[_U(m + _MG + c)] + Cn * V[_VDY + c]
                            a = AD[_U(ak + c)]
                            gah = gv * a * HS[_U(hp + c)]
                            M[_U(m + _MD + c)] += gah * Q[_U(oDT + qk + c)]
                            V[_VDDA + c] += gah * M[_U(m + _MA + c)]
                            V[_VGB + c] += gv * Bn
                            V[_VTB + c] = gv * Q[_U(oDU + qk + c)]
                            V[_VTC + c] = HS[_U(hp + NC + c)] * V[_VDY + c]
                            M[_U(m + _MG + c)] = a * gv
                        for l8 in range(8):  # fixed-order sums over the block's channels: 8 lanes of 8 ...
                            b0 = _VTB + l8
                            c0_ = _VTC + l8
                            V[_VP8 + l8] = (((V[b0] + V[b0 + 8]) + (V[b0 + 16] + V[b0 + 24]))
                                            + ((V[b0 + 32] + V[b0 + 40]) + (V[b0 + 48] + V[b0 + 56])))
                            V[_VP8 + 8 + l8] = (((V[c0_] + V[c0_ + 8]) + (V[c0_ + 16] + V[c0_ + 24]))
                                                + ((V[c0_ + 32] + V[c0_ + 40]) + (V[c0_ + 48] + V[c0_ + 56])))
                        s_b = (((V[_VP8] + V[_VP8 + 1]) + (V[_VP8 + 2] + V[_VP8 + 3]))  # ... then the lanes
                               + ((V[_VP8 + 4] + V[_VP8 + 5]) + (V[_VP8 + 6] + V[_VP8 + 7])))
                        s_c = (((V[_VP8 + 8] + V[_VP8 + 9]) + (V[_VP8 + 10] + V[_VP8 + 11]))
                               + ((V[_VP8 + 12] + V[_VP8 + 13]) + (V[_VP8 + 14] + V[_VP8 + 15])))
                        dB_p[po + n] = s_b
                        dC_p[po + n] = s_c
                    for c in range(cw):
                        u = Q[_U(oU + qk + c)]
                        gB = V[_VGB + c]
                        dyc = V[_VDY + c]
                        dx[_U(xgo + c)] += Q[_U(oDT + qk + c)] * gB + V[_VDV + c] * dyc
                        dpre = (u * gB + V[_VDDA + c] * LN2) * Q[_U(oSG + qk + c)]
                        ddl[_U(dgo + c)] = dpre
                        V[_VDBC + c] += dpre
                        V[_VDDC + c] += dyc * u
                for q in range(NC):
                    dA_t[q] += M[(q // CB) * _MS + _MD + q % CB]
                for c in range(CB):
                    dD_t[c] += V[_VDDC + c]
                    db_t[c] += V[_VDBC + c]
            base = b * S_ * Dg + prow
            for n in range(N):
                for c in range(cw):
                    dA_p[(base + c) * N + n] = dA_t[n * CB + c]
            for c in range(cw):
                dD_p[base + c] = dD_t[c]
                dbias_p[base + c] = db_t[c]


@njit(**JIT)
def sum_blocks(p0, p1, part: _F32, out: _F32, nblk: _INT, size: _INT):
    """out[e] = sum over blocks of part[blk * size + e] in block order, for e in p0 .. p1 - 1."""
    for e in range(p0, p1):
        out[e] = part[e]
    for blk in range(1, nblk):
        base = blk * size
        for e in range(p0, p1):
            out[e] += part[base + e]


