"""Compiled CPU selective scan (numba): the default backend for CPU tensors when numba is installed.

Design
------
* **Channels-last, SIMD over channels.** One *program* owns one batch element and a block of at most ``CB`` = 64
  consecutive channels of one B/C group (4 cache lines of fp32 per position), for every route of that group. It
  walks the route's positions; the innermost loops run over the block's (contiguous) channels, which LLVM
  vectorises (AVX2: 8 lanes). B_t / C_t are scalars broadcast over the block.
* **Fused SS2D.** The four routes are read in place through index tables (row-major and column-major positions,
  walked forwards for routes 0/1 and backwards for 2/3): no cross-scanned copies, strided operands (slices of
  one x_proj output, route-major delta) read through their strides. A program does its routes one after the
  other and owns its slice of the merged y (every route adds into it): no atomics, no ``(4, ...)``
  intermediate. The plain op runs the same kernels on channels-last copies of u/delta/dy (one copy each way);
  its B/C are read in place.
* **Batches of positions, so the transcendentals pipeline.** The recurrence itself is two FMAs per state; the
  cost is in softplus and exp, long dependency chains. Each route is processed in batches of ``_TQ`` positions:
  (1) gather the batch's delta + bias and u into scratch (software-prefetching the next batch's cache lines:
  column-major routes stride across pages, where the hardware prefetcher gives up), (2) softplus over the whole
  batch in one flat loop and (3) the decays ``exp(Δ A)`` for the whole batch, both loops of independent
  elements, compiled with a forced LLVM interleave factor of 4 so that four vectors' chains are in flight, and
  (4) the sequential recurrence, now cheap. The per-position scalar work (offsets, loop set-up) is spread over
  the 64-channel block.
* **Transcendentals** are branch-free polynomials in plain fp32 arithmetic (vectorised with the loops; no libm
  calls): ``exp`` = Cody-Waite reduction ``x = n ln2 + r`` and a degree-6 polynomial (Estrin), ``2^n`` from the
  float bits of ``x log2(e) + 1.5 * 2^23 + 127`` shifted into the exponent field (a scalar
  ``float32.view(int32)``, which LLVM vectorises); the decays use ``2^(Δ A log2 e)`` with ``A log2 e``
  precomputed per channel (as the CUDA kernel does). Inputs below -87.3 (exp) / -126 (exp2) are clamped there
  (result ~1e-38 instead of a denormal or 0); inputs above 88.03 / 127 clamp to ~1.7e38 (no inf); NaN propagates.
  ``softplus(z) = max(z, 0) + log1p(exp(-|z|))``, identity above 20 as torch, with ``log1p`` from the Cephes
  ``logf`` polynomial on the reduced argument (no ``1 + w`` rounding); ``sigmoid`` (softplus backward) =
  ``(1 or w) / (1 + w)`` with ``w = exp(-|z|)``. Max errors against float64, measured by
  ``tests/ops/test_ops_numba.py::test_transcendentals``: exp 1.26 ulp, exp2 1.18, log1p 1.41, softplus 2.04,
  sigmoid 2.40. FMA contraction is the only fast-math flag (no nnan/ninf/reassoc).
* **Backward** recomputes: per program and route the sequence is cut into chunks of ``T`` positions (states,
  decays, Δ, u, sigmoid for ``T`` positions: ~256 KB of scratch per thread). One forward pass stores the state entering
  each chunk (only when there is more than one chunk); then the chunks are taken in reverse: recompute the
  chunk (same batched pipeline), run the adjoint ``g_t = C_t dy_t + exp(Δ_{t+1} A) g_{t+1}`` backwards through
  it and form all gradients; no transcendental in the adjoint loop. Nothing is saved by the forward
  (``saved == ()``); scratch is per thread, never ``(..., N, L)``-sized.
* **Deterministic, independent of the thread count.** The forward is per-channel arithmetic (its channel split
  follows the thread count, which cannot change a result). The backward's split is fixed by the sizes only, and
  every reduction has a fixed order: dB_t / dC_t are summed over a block's channels in a fixed order, written per
  block and summed over blocks in block order; dA, dD and d(delta_bias) are summed per program (fp32 within a
  chunk, fp64 across chunks), written per batch element and summed over the batch in order. Results are bitwise
  identical run to run and for any thread count.
* Threads: ``min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)`` per call, each taking tasks of
  whole programs. They are torch's own OpenMP team where ATen runs on OpenMP (:mod:`.omp_team`: the kernels as
  ``cfunc`` s started through ``GOMP_parallel``): a separate pool shared its cores with that team's threads,
  which spin for a while after every torch op, and ran the op at 2 threads ~1.3x slower than the team does.
  Elsewhere (or with ``VMAMBA_CPU_TEAM=0``) a thread pool of this module runs the ``nogil`` kernels
  (``numba.prange`` would add ~3x to the compile time).
* dtypes: fp32/fp16/bf16 inputs (halves converted to fp32 once), fp32 math and state, gradients in the input
  dtypes. **float64** inputs (gradcheck) are delegated to the float64 torch backend (:mod:`.torch_scan`),
  which recomputes its saved step sizes in the backward so that this backend still saves nothing.
* Compiled with ``cache=True`` on first use (measured here: 9-17 s for everything, depending on the load of the
  shared 2-core machine; the team cfuncs, compiled on the first multi-threaded call, add ~6 s: 15.4 s in all),
  loaded from numba's cache by later processes (~1 s). Every kernel takes 1-D fp32 buffers + int64 strides
  (callers pass no literal constants, which would specialise a callee per value), so each compiles exactly once.
  ``VMAMBA_NUMBA_NOCACHE=1`` disables the cache (for asm inspection).

Backend interface: as :mod:`.torch_scan` (``scan_fwd``/``scan_bwd``/``ss2d_fwd``/``ss2d_bwd``).
"""
import os
import threading

try:
    import numba
    from numba import carray, cfunc, njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic
except ImportError as err:  # dispatch falls back to the torch backend
    raise ImportError(f'vmamba.ops.numba_scan needs numba ({err}); install numba or use backend="torch"') from err

import llvmlite.binding as llvm
import numpy as np
import torch
from llvmlite import ir

from . import omp_team

__all__ = ['scan_fwd', 'scan_bwd', 'ss2d_fwd', 'ss2d_bwd', 'scan_saved_like', 'ss2d_saved_like', 'n_threads', 'CB',
           'fexp', 'fexp2', 'flog1p', 'fsoftplus', 'fsigmoid']

#: Largest channel block of a program (a compile-time constant of the kernels).
CB = 64
#: Positions per batch (forward and backward recompute).
_TQ = 32
#: Scratch of one backward chunk, in floats: T positions x (2 N + 5) x CB (states, decays, 5 per-channel rows).
_CHUNK_FLOATS = 65536

_CACHE = os.environ.get('VMAMBA_NUMBA_NOCACHE') != '1'
_FM = {'contract', 'nsz', 'arcp'}  # FMA contraction only; no nnan/ninf/reassoc (the range reductions need order)
_JIT = dict(cache=_CACHE, fastmath=_FM, error_model='numpy', nogil=True)
_f32 = np.float32
_U = np.uint64  # unsigned indices: numba then adds no negative-index wraparound, so the loops vectorise

# exp: x = n ln2 + r (ln2 = _C1 + _C2), |r| <= ln2 / 2; 2^n from the bits of x log2e + _MAGIC
_LOG2E, _C1, _C2 = _f32(1.4426950408889634), _f32(0.693359375), _f32(-2.12194440e-4)
_MAGIC = _f32(12582912.0 + 127.0)  # 1.5 * 2^23 + 127
_X1, _X2, _X3 = _f32(1.0), _f32(0.4999999403953552), _f32(0.1666652113199234)
_X4, _X5, _X6 = _f32(0.04166838899254799), _f32(0.008368710055947304), _f32(0.0013814610429108143)
_X_LO, _X_HI = _f32(-87.33654), _f32(88.02969)
# exp2 on the fraction f in [-1/2, 1/2]
_P1, _P2, _P3 = _f32(0.6931471824645996), _f32(0.24022647738456726), _f32(0.055503323674201965)
_P4, _P5, _P6 = _f32(0.00961843691766262), _f32(0.0013398875016719103), _f32(0.00015353360504377633)
_U_LO, _U_HI = _f32(-126.0), _f32(127.0)
# log1p (Cephes logf polynomial on [sqrt(1/2) - 1, sqrt(2) - 1])
_L0, _L1, _L2 = _f32(7.0376836292e-2), _f32(-1.1514610310e-1), _f32(1.1676998740e-1)
_L3, _L4, _L5 = _f32(-1.2420140846e-1), _f32(1.4249322787e-1), _f32(-1.6668057665e-1)
_L6, _L7, _L8 = _f32(2.0000714765e-1), _f32(-2.4999993993e-1), _f32(3.3333331174e-1)
_LN2, _SQRT2M1 = _f32(0.6931471805599453), _f32(0.41421356237309503)
_ZERO, _HALF, _ONE, _TWENTY = _f32(0.0), _f32(0.5), _f32(1.0), _f32(20.0)
_I23 = np.int32(23)


# ------------------------------------------------------------------------------------------------------------
# Scalar fp32 math, written so that LLVM vectorises it inside the loops (selects, no branches or calls).
# ------------------------------------------------------------------------------------------------------------
@njit(**_JIT)
def _pow2i(t):
    """2^n for t = u + _MAGIC (t's low mantissa bits hold n + 127)."""
    return np.int32(np.float32(t).view(np.int32) << _I23).view(np.float32)


@njit(**_JIT)
def fexp(x):
    """exp(x) in fp32 (~1 ulp); clamped to [-87.34, 88.03]; NaN -> NaN."""
    xc = _X_LO if x < _X_LO else x  # comparisons written so that NaN falls through
    xc = _X_HI if xc > _X_HI else xc
    t = xc * _LOG2E + _MAGIC
    n = t - _MAGIC
    r = xc - n * _C1
    r = r - n * _C2
    r2 = r * r
    p = (r + _X1) + r2 * ((_X2 + _X3 * r) + r2 * ((_X4 + _X5 * r) + r2 * _X6))
    return p * _pow2i(t)


@njit(**_JIT)
def fexp2(u):
    """2^u in fp32 (~1 ulp); clamped to [-126, 127]; NaN -> NaN."""
    uc = _U_LO if u < _U_LO else u
    uc = _U_HI if uc > _U_HI else uc
    t = uc + _MAGIC
    f = uc - (t - _MAGIC)
    f2 = f * f
    p = (_X1 + _P1 * f) + f2 * ((_P2 + _P3 * f) + f2 * ((_P4 + _P5 * f) + f2 * _P6))
    return p * _pow2i(t)


@njit(**_JIT)
def flog1p(w):
    """log(1 + w) for w in [0, 1] (what softplus needs): log1p(f) + k ln2 with 1 + w = 2^k (1 + f)."""
    big = w > _SQRT2M1
    f = (w - _ONE) * _HALF if big else w  # (1 + w) / 2 - 1, without rounding 1 + w
    z = f * f
    z2 = z * z
    p = ((_L8 + _L7 * f) + z * (_L6 + _L5 * f)) + z2 * (((_L4 + _L3 * f) + z * (_L2 + _L1 * f)) + z2 * _L0)
    y = f * z * p - _HALF * z + f
    return y + _LN2 if big else y


@njit(**_JIT)
def fsoftplus(z):
    """softplus(z) = log(1 + exp(z)), identity above 20 (torch's threshold)."""
    s = (z if z > _ZERO else _ZERO) + flog1p(fexp(-abs(z)))
    return z if z > _TWENTY else s


@njit(**_JIT)
def fsigmoid(z):
    """sigmoid(z) = d softplus / dz; 1 above 20 (torch's softplus backward)."""
    w = fexp(-abs(z))
    s = (_ONE if z >= _ZERO else w) / (_ONE + w)
    return _ONE if z > _TWENTY else s


@intrinsic
def _prefetch(typingctx, arr, idx):
    """Software prefetch of arr[idx] into all cache levels (a hint: never faults, even out of bounds)."""
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False,
                                       boundscheck=False)
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32]),
                                            'llvm.prefetch.p0')
        builder.call(fn, [ptr, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()
    return sig, codegen


# ------------------------------------------------------------------------------------------------------------
# Batch loops (independent elements), compiled with a forced interleave factor (see _compile_batch_loops).
# Row k of a batch buffer holds position k's CB channels.
# ------------------------------------------------------------------------------------------------------------
@njit(**_JIT)
def _delta_batch(Z, DT, DU, UU, ne, softplus):
    """DT = softplus(Z) (or Z), DU = DT * UU for the batch's ne = rows * CB elements."""
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


@njit(**_JIT)
def _sigmoid_batch(Z, SG, ne, softplus):
    """SG = dΔ / d(delta + bias): sigmoid(Z) (or 1)."""
    if softplus:
        for e in range(ne):
            SG[e] = fsigmoid(Z[e])
    else:
        for e in range(ne):
            SG[e] = _ONE


@njit(**_JIT)
def _decay_batch(DT, AT, AD, rows, N, stride):
    """AD[(n * stride + k) * CB + c] = 2^(DT[k, c] AT[n, c]) = exp(Δ A) for the batch's rows."""
    for n in range(N):
        for k in range(rows):
            base = (n * stride + k) * CB
            for c in range(CB):
                AD[_U(base + c)] = fexp2(DT[_U(k * CB + c)] * AT[_U(n * CB + c)])


_BATCH_SIGS = (
    (_delta_batch, (types.float32[::1],) * 4 + (types.int64, types.boolean)),
    (_sigmoid_batch, (types.float32[::1],) * 2 + (types.int64, types.boolean)),
    (_decay_batch, (types.float32[::1],) * 3 + (types.int64,) * 3),
)
_COMPILE_LOCK = threading.Lock()
_COMPILED = []


def _compile_batch_loops():
    """Compile (or load from cache) the batch loops with LLVM's ``-force-vector-interleave=4`` (4 vectors per
    iteration: their long exp/log chains overlap; ~1.5-2x faster than LLVM's own choice here), before the
    kernels that call them are compiled, then restore the default. Process-wide LLVM option, set only here."""
    with _COMPILE_LOCK:
        if _COMPILED:
            return
        llvm.set_option('', '-force-vector-interleave=4')
        try:
            for fn, sig in _BATCH_SIGS:
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
@njit(**_JIT)
def _gather(t0, tn, L, r, lay, ii, jj, b, g, slot, Dg, c0, cw, x, xs, dl, ds, Bm, bs, Cm, cs, yp, yps, BV, Z, UU):
    """Rows 0 .. tn-1 of Z / UU = delta + bias / u at positions t0 .. t0 + tn - 1 of route r; prefetches this
    batch's yp lines (y or dy) and the next batch's x / delta / B / C lines."""
    for k in range(tn):
        t = t0 + k
        tt = L - 1 - t if r >= 2 else t
        i = ii[lay, tt]
        j = jj[lay, tt]
        xo = b * xs[0] + i * xs[1] + j * xs[2] + g * Dg + c0
        do = b * ds[0] + i * ds[1] + j * ds[2] + slot * ds[3] + c0
        yo = b * yps[0] + i * yps[1] + j * yps[2] + g * Dg + c0
        for c in range(0, cw, 16):
            _prefetch(yp, _U(yo + c))
        tp = t + _TQ
        if tp < L:
            tt = L - 1 - tp if r >= 2 else tp
            i2 = ii[lay, tt]
            j2 = jj[lay, tt]
            xo2 = b * xs[0] + i2 * xs[1] + j2 * xs[2] + g * Dg + c0
            do2 = b * ds[0] + i2 * ds[1] + j2 * ds[2] + slot * ds[3] + c0
            for c in range(0, cw, 16):
                _prefetch(x, _U(xo2 + c))
                _prefetch(dl, _U(do2 + c))
            _prefetch(Bm, _U(b * bs[0] + i2 * bs[1] + j2 * bs[2] + slot * bs[3]))
            _prefetch(Cm, _U(b * cs[0] + i2 * cs[1] + j2 * cs[2] + slot * cs[3]))
        for c in range(cw):
            Z[_U(k * CB + c)] = dl[_U(do + c)] + BV[c]
            UU[_U(k * CB + c)] = x[_U(xo + c)]


@njit(**_JIT)
def _load_params(A, Dp, bias, prow, cw, N, AT, BV, DV):
    for c in range(cw):
        BV[c] = bias[prow + c]
        DV[c] = Dp[prow + c]
        for n in range(N):
            AT[n * CB + c] = A[(prow + c) * N + n] * _LOG2E


@njit(**_JIT)
def _fwd_programs(p0, p1, bw, x, xs, dl, ds, Bm, bs, Cm, cs, A, Dp, bias, y, ys, ii, jj, G, R, Dg, N, L,
                  softplus):
    """Forward programs p0 .. p1 - 1 (block width bw; y must be zero on entry)."""
    nblk = (Dg + bw - 1) // bw
    tq = np.int64(_TQ)  # not a literal: a literal argument would compile a second specialisation of the callee
    AT = np.zeros(N * CB, np.float32)
    H = np.zeros(N * CB, np.float32)
    BV = np.zeros(CB, np.float32)
    DV = np.zeros(CB, np.float32)
    ACC = np.zeros(CB, np.float32)
    Z = np.zeros(_TQ * CB, np.float32)
    UU = np.zeros(_TQ * CB, np.float32)
    DT = np.zeros(_TQ * CB, np.float32)
    DU = np.zeros(_TQ * CB, np.float32)
    AD = np.zeros(N * _TQ * CB, np.float32)
    for prog in range(p0, p1):
        b = prog // (G * nblk)
        g = (prog // nblk) % G
        c0 = (prog % nblk) * bw
        cw = min(bw, Dg - c0)
        Z[:] = _ZERO
        UU[:] = _ZERO
        AT[:] = _ZERO
        for r in range(R):
            slot = g * R + r
            _load_params(A, Dp, bias, slot * Dg + c0, cw, N, AT, BV, DV)
            H[:] = _ZERO
            lay = r % 2
            for t0 in range(0, L, _TQ):
                tn = min(_TQ, L - t0)
                _gather(t0, tn, L, r, lay, ii, jj, b, g, slot, Dg, c0, cw, x, xs, dl, ds, Bm, bs, Cm, cs, y, ys,
                        BV, Z, UU)
                _delta_batch(Z, DT, DU, UU, tn * CB, softplus)
                _decay_batch(DT, AT, AD, tn, N, tq)
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
                            v = AD[_U((n * _TQ + k) * CB + c)] * H[_U(n * CB + c)] + DU[_U(k * CB + c)] * Bn
                            H[_U(n * CB + c)] = v
                            ACC[c] += v * Cn
                    for c in range(cw):
                        y[_U(yo + c)] += ACC[c]


# Backward scratch, laid out so that the adjoint loop touches few distinct arrays (LLVM's runtime alias checks
# grow with their pairs and it stops vectorising past 8): per-channel vectors in V (row q at q * CB), per-state
# rows in M ([n][slot][c]), the chunk's per-position rows in Q (region X at X * T * CB, row k at k * CB).
_VBV, _VDV, _VDY, _VGB, _VDDA, _VTB, _VTC, _VDDC, _VDBC, _VP8 = [q * CB for q in range(10)]
_MH, _MA, _MG, _MD = 0, CB, 2 * CB, 3 * CB
_MS = 4 * CB


@njit(**_JIT)
def _bwd_programs(p0, p1, bw, x, xs, dl, ds, Bm, bs, Cm, cs, A, Dp, bias, dy, dys, ii, jj,
                  dx, dxs, ddl, dds, dA_p, dD_p, dbias_p, dB_p, dC_p, batch, G, R, Dg, N, L, W, T, softplus):
    """Backward programs p0 .. p1 - 1 (block width bw; dx must be zero on entry); see the module docstring.
    T (chunk length) is a multiple of _TQ. Per route: steps 0 .. n_chunks - 2 run the chunks forwards and keep
    the state entering each next chunk; then every chunk, last first, is recomputed and run backwards."""
    nblk = (Dg + bw - 1) // bw
    n_chunks = (L + T - 1) // T
    NC = N * CB
    TC_ = T * CB
    S_ = G * R
    oU, oDT, oDU, oSG = TC_, 2 * TC_, 3 * TC_, 4 * TC_
    V = np.zeros(10 * CB, np.float32)
    M = np.zeros(N * _MS, np.float32)
    AT = np.zeros(NC, np.float32)
    Hc = np.zeros(NC, np.float32)
    Q = np.zeros(5 * TC_, np.float32)   # the chunk's rows: delta + bias, u, Δ, Δu, sigmoid
    AD = np.zeros(N * TC_, np.float32)  # its decays
    HS = np.zeros((T + 1) * NC, np.float32)  # its states: row k + 1 after position k, row 0 entering
    ckpt = np.zeros(n_chunks * NC, np.float32)
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
        Q[:] = _ZERO
        V[:] = _ZERO
        AT[:] = _ZERO
        for r in range(R):
            slot = g * R + r
            prow = slot * Dg + c0
            _load_params(A, Dp, bias, prow, cw, N, AT, BV, DV)
            for q in range(NC):
                M[(q // CB) * _MS + _MA + q % CB] = AT[q]
                M[(q // CB) * _MS + _MG + q % CB] = _ZERO
            lay = r % 2
            dA_t[:] = 0.0
            dD_t[:] = 0.0
            db_t[:] = 0.0
            for step in range(2 * n_chunks - 1):
                forward = step < n_chunks - 1
                ch = step if forward else 2 * n_chunks - 2 - step
                t0 = ch * T
                tn = min(L, t0 + T) - t0
                # recompute the chunk: rows of Q, decays, states
                Hc[:] = ckpt[ch * NC:(ch + 1) * NC]
                for k0 in range(0, tn, _TQ):
                    _gather(t0 + k0, min(_TQ, tn - k0), L, r, lay, ii, jj, b, g, slot, Dg, c0, cw, x, xs, dl, ds,
                            Bm, bs, Cm, cs, dy, dys, BV, Z[k0 * CB:], UU[k0 * CB:])
                if not forward:
                    _sigmoid_batch(Z, SG, tn * CB, softplus)
                _delta_batch(Z, DT, DU, UU, tn * CB, softplus)
                _decay_batch(DT, AT, AD, tn, N, T)
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
                    ckpt[(ch + 1) * NC:(ch + 2) * NC] = Hc
                    continue
                # the adjoint scan backwards through the chunk; M[G] carries exp(Δ_{t+1} A) g_{t+1}
                for q in range(NC):
                    M[(q // CB) * _MS + _MD + q % CB] = _ZERO
                for c in range(CB):
                    V[_VDDC + c] = _ZERO
                    V[_VDBC + c] = _ZERO
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
                        V[_VGB + c] = _ZERO
                        V[_VDDA + c] = _ZERO
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
                        dpre = (u * gB + V[_VDDA + c] * _LN2) * Q[_U(oSG + qk + c)]
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


@njit(**_JIT)
def _sum_blocks(p0, p1, part, out, nblk, size):
    """out[e] = sum over blocks of part[blk * size + e] in block order, for e in p0 .. p1 - 1."""
    for e in range(p0, p1):
        out[e] = part[e]
    for blk in range(1, nblk):
        base = blk * size
        for e in range(p0, p1):
            out[e] += part[base + e]


# ------------------------------------------------------------------------------------------------------------
# The kernels as cfuncs for torch's OpenMP team (see .omp_team): every thread takes tasks from the block's
# counter; argument k of the kernel (after p0, p1) is slot k of the block. Compiled lazily (cfunc compiles at
# decoration) by _team_cfunc, after _compile_batch_loops.
# ------------------------------------------------------------------------------------------------------------
_TEAM_SIG = types.void(types.CPointer(types.int64))
_TEAM_JIT = dict(cache=_CACHE, nogil=True)
_f, _i, _i2, _d, _scalar = (omp_team.arg_f32, omp_team.arg_i64, omp_team.arg_i64_2d, omp_team.arg_f64,
                             omp_team.arg_int)


def _fwd_team(ptr):
    a = carray(ptr, (omp_team.HEADER + 3 * 22,))
    while True:
        p0, p1 = omp_team.next_range(a)
        if p1 == 0:
            return
        _fwd_programs(p0, p1, _scalar(a, 0), _f(a, 1), _i(a, 2), _f(a, 3), _i(a, 4), _f(a, 5), _i(a, 6), _f(a, 7),
                      _i(a, 8), _f(a, 9), _f(a, 10), _f(a, 11), _f(a, 12), _i(a, 13), _i2(a, 14), _i2(a, 15),
                      _scalar(a, 16), _scalar(a, 17), _scalar(a, 18), _scalar(a, 19), _scalar(a, 20),
                      _scalar(a, 21) != 0)


def _bwd_team(ptr):
    a = carray(ptr, (omp_team.HEADER + 3 * 34,))
    while True:
        p0, p1 = omp_team.next_range(a)
        if p1 == 0:
            return
        _bwd_programs(p0, p1, _scalar(a, 0), _f(a, 1), _i(a, 2), _f(a, 3), _i(a, 4), _f(a, 5), _i(a, 6), _f(a, 7),
                      _i(a, 8), _f(a, 9), _f(a, 10), _f(a, 11), _f(a, 12), _i(a, 13), _i2(a, 14), _i2(a, 15),
                      _f(a, 16), _i(a, 17), _f(a, 18), _i(a, 19), _d(a, 20), _d(a, 21), _d(a, 22), _f(a, 23),
                      _f(a, 24), _scalar(a, 25), _scalar(a, 26), _scalar(a, 27), _scalar(a, 28), _scalar(a, 29),
                      _scalar(a, 30), _scalar(a, 31), _scalar(a, 32), _scalar(a, 33) != 0)


def _sum_blocks_team(ptr):
    a = carray(ptr, (omp_team.HEADER + 3 * 4,))
    while True:
        p0, p1 = omp_team.next_range(a)
        if p1 == 0:
            return
        _sum_blocks(p0, p1, _f(a, 0), _f(a, 1), _scalar(a, 2), _scalar(a, 3))


_TEAM_FUNCS = {_fwd_programs: _fwd_team, _bwd_programs: _bwd_team, _sum_blocks: _sum_blocks_team}
_TEAM = {}  # kernel -> its compiled cfunc (compiled on first use, after the batch loops)


# ------------------------------------------------------------------------------------------------------------
# Host side
# ------------------------------------------------------------------------------------------------------------
def n_threads():
    """Threads a call uses: ``torch.get_num_threads()``, at most ``numba.config.NUMBA_NUM_THREADS``."""
    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


_POOL = []


def _team_cfunc(fn):
    """The cfunc that runs kernel fn on torch's OpenMP team (compiled, or loaded from numba's cache, once)."""
    with _COMPILE_LOCK:
        if fn not in _TEAM:
            _TEAM[fn] = cfunc(_TEAM_SIG, **_TEAM_JIT)(_TEAM_FUNCS[fn])
    return _TEAM[fn]


def _run_parallel(fn, n_items, *args):
    """fn(p0, p1, *args) over [0, n_items), split into tasks of whole programs, on n_threads() threads (the
    calling one included): torch's OpenMP team where ATen runs on OpenMP (:mod:`.omp_team`), else a thread pool
    of this module. The results do not depend on the split: every program writes its own outputs."""
    if n_items <= 0:
        return
    _compile_batch_loops()
    threads = min(n_threads(), n_items)
    if threads == 1:
        fn(0, n_items, *args)
        return
    tasks = min(n_items, 4 * threads)  # a few tasks per thread: balances unequal programs and busy cores
    if omp_team.available():  # torch's OpenMP team: its threads are spinning for work anyway (see .omp_team)
        omp_team.run(_team_cfunc(fn), omp_team.pack(n_items, tasks, args), threads)
        return
    with _COMPILE_LOCK:
        if not _POOL or _POOL[0]._max_workers < threads - 1:
            from concurrent.futures import ThreadPoolExecutor
            if _POOL:
                _POOL.pop().shutdown(wait=False)
            _POOL.append(ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix='vmamba-numba'))
        pool = _POOL[0]
    bounds = [n_items * k // tasks for k in range(tasks + 1)]
    queue = list(range(tasks - 1, -1, -1))
    lock = threading.Lock()

    def drain():
        while True:
            with lock:
                if not queue:
                    return
                k = queue.pop()
            fn(bounds[k], bounds[k + 1], *args)

    futures = [pool.submit(drain) for _ in range(threads - 1)]
    try:
        drain()
    finally:
        for f in futures:
            f.result()


def _cdiv(a, b):
    return -(-a // b)


def _block_width(Dg, nblk):
    """Width (a multiple of 8, at most CB) of nblk near-equal blocks of Dg channels."""
    return max(1, min(CB, _cdiv(_cdiv(Dg, nblk), 8) * 8))


def _fwd_block(Dg, units):
    """Forward block width: blocks of <= CB channels, more of them when units (batch x groups) programs would
    leave threads idle. (Forward results do not depend on the split: it is per-channel arithmetic.)"""
    nblk = _cdiv(Dg, CB)
    threads = n_threads()
    if units * nblk < threads:
        nblk = min(_cdiv(Dg, 8), _cdiv(threads, units))
    return _block_width(Dg, nblk)


def _bwd_block(Dg):
    """Backward block width: fixed by Dg alone (dB/dC are summed over channels block by block)."""
    return _block_width(Dg, _cdiv(Dg, CB))


def _chunk_len(L, N):
    """Backward chunk length: a multiple of _TQ with about _CHUNK_FLOATS floats of chunk scratch."""
    T = max(_TQ, _CHUNK_FLOATS // ((2 * N + 5) * CB) // _TQ * _TQ)
    return min(T, _cdiv(L, _TQ) * _TQ)


def _buffer(t, unit_last=True):
    """(1-D fp32 numpy view of the memory t spans, int64 strides) for a CPU tensor: no copy when t is fp32 (and,
    with ``unit_last``, has a unit last stride); else one conversion / copy."""
    t = t.detach()
    if t.dtype != torch.float32:
        t = t.to(torch.float32)
    if unit_last and t.dim() and t.shape[-1] > 1 and t.stride(-1) != 1:
        t = t.contiguous()
    if t.numel() == 0:
        return np.zeros(1, np.float32), np.zeros(t.dim(), np.int64)
    span = 1 + sum((s - 1) * st for s, st in zip(t.shape, t.stride()))
    flat = t.as_strided((span,), (1,), t.storage_offset()).numpy()
    return flat, np.asarray(t.stride(), dtype=np.int64)


def _param(t, rows):
    """A / D / delta_bias as a flat fp32 array (zeros when absent)."""
    if t is None:
        return np.zeros(rows, np.float32)
    return t.detach().to(torch.float32).contiguous().numpy().reshape(-1)


_INDEX_CACHE = {}


def _index_tables(H, W):
    """(ii, jj) (2, H*W) int64: spatial row / column of sequence position t in row-major (0) and column-major
    (1) order."""
    key = (H, W)
    if key not in _INDEX_CACHE:
        t = np.arange(H * W, dtype=np.int64)
        ii = np.ascontiguousarray(np.stack([t // W, t % H]))
        jj = np.ascontiguousarray(np.stack([t % W, t // H]))
        if len(_INDEX_CACHE) > 64:
            _INDEX_CACHE.clear()
        _INDEX_CACHE[key] = (ii, jj)
    return _INDEX_CACHE[key]


def _is_f64(*tensors):
    return any(t is not None and t.dtype == torch.float64 for t in tensors)


def _strides(t):
    return np.asarray(t.stride(), dtype=np.int64)


def _core_fwd(x, delta, A, B, C, D, delta_bias, softplus, G, R, Dg, H, W):
    """y (batch, H, W, G*Dg) fp32 for channels-last operands: x (b, H, W, G*Dg), delta (b, H, W, G*R, Dg),
    B/C (b, H, W, G*R, N); route r of group g uses delta/B/C slot g*R + r and parameter rows (g*R + r)*Dg + c."""
    batch, N = x.shape[0], A.shape[1]
    rows = G * R * Dg
    xb, xs = _buffer(x)
    db, ds = _buffer(delta)
    Bb, bs = _buffer(B, unit_last=False)
    Cb, cs = _buffer(C, unit_last=False)
    y = torch.zeros((batch, H, W, G * Dg), dtype=torch.float32)
    ii, jj = _index_tables(H, W)
    if y.numel():
        bw = _fwd_block(Dg, batch * G)
        _run_parallel(_fwd_programs, batch * G * _cdiv(Dg, bw), bw, xb, xs, db, ds, Bb, bs, Cb, cs, _param(A, rows),
                      _param(D, rows), _param(delta_bias, rows), y.numpy().reshape(-1), _strides(y), ii, jj,
                      G, R, Dg, N, H * W, bool(softplus))
    return y


def _core_bwd(x, delta, A, B, C, D, delta_bias, softplus, dy, G, R, Dg, H, W):
    """(dx (b, H, W, G*Dg), ddelta (b, H, W, G*R, Dg), dA (G*R*Dg, N), dB/dC (b, H, W, G*R, N), dD, dbias)
    fp32 (dD / dbias None when D / delta_bias are)."""
    batch, N = x.shape[0], A.shape[1]
    L = H * W
    S = G * R
    rows = S * Dg
    xb, xs = _buffer(x)
    db, ds = _buffer(delta)
    Bb, bs = _buffer(B, unit_last=False)
    Cb, cs = _buffer(C, unit_last=False)
    yb, ys = _buffer(dy)
    bw = _bwd_block(Dg)
    nblk = _cdiv(Dg, bw)
    dx = torch.zeros((batch, H, W, G * Dg), dtype=torch.float32)
    ddelta = torch.empty((batch, H, W, S, Dg), dtype=torch.float32)
    dA_p = np.zeros((batch, rows * N), np.float64)
    dD_p = np.zeros((batch, rows), np.float64)
    dbias_p = np.zeros((batch, rows), np.float64)
    size = batch * L * S * N
    dB = torch.empty((batch, H, W, S, N), dtype=torch.float32)
    dC = torch.empty((batch, H, W, S, N), dtype=torch.float32)
    if nblk > 1:
        dB_p, dC_p = np.empty(nblk * size, np.float32), np.empty(nblk * size, np.float32)
    else:
        dB_p, dC_p = dB.numpy().reshape(-1), dC.numpy().reshape(-1)
    ii, jj = _index_tables(H, W)
    if dx.numel():
        _run_parallel(_bwd_programs, batch * G * nblk, bw, xb, xs, db, ds, Bb, bs, Cb, cs, _param(A, rows),
                      _param(D, rows), _param(delta_bias, rows), yb, ys, ii, jj, dx.numpy().reshape(-1),
                      _strides(dx), ddelta.numpy().reshape(-1), _strides(ddelta), dA_p.reshape(-1),
                      dD_p.reshape(-1), dbias_p.reshape(-1), dB_p, dC_p, batch, G, R, Dg, N, L, W,
                      _chunk_len(L, N), bool(softplus))
        if nblk > 1:
            _run_parallel(_sum_blocks, size, dB_p, dB.numpy().reshape(-1), nblk, size)
            _run_parallel(_sum_blocks, size, dC_p, dC.numpy().reshape(-1), nblk, size)
    # over the batch, in order (numpy adds the rows of an axis-0 sum one after the other)
    dA = torch.from_numpy(dA_p.sum(0).astype(np.float32).reshape(rows, N))
    dD = torch.from_numpy(dD_p.sum(0).astype(np.float32)) if D is not None else None
    dbias = torch.from_numpy(dbias_p.sum(0).astype(np.float32)) if delta_bias is not None else None
    return dx, ddelta, dA, dB, dC, dD, dbias


# ------------------------------------------------------------------------------------------------------------
# Backend interface
# ------------------------------------------------------------------------------------------------------------
def scan_saved_like(u, delta, A, B, C):
    """What :func:`scan_fwd` saves: nothing."""
    return ()


def ss2d_saved_like(x, delta, A, B, C):
    """What :func:`ss2d_fwd` saves: nothing."""
    return ()


def _torch_backend():
    from . import torch_scan
    return torch_scan


def scan_fwd(u, delta, A, B, C, D, delta_bias, delta_softplus, out_dtype):
    """Plain scan forward: u/delta (batch, K*Dg, L), B/C (batch, K, N, L). Returns ``(y, ())``."""
    if _is_f64(u, delta, B, C):
        return _torch_backend().scan_fwd(u, delta, A, B, C, D, delta_bias, delta_softplus, out_dtype)[0], ()
    batch, channels, L = u.shape
    K = B.shape[1]
    Dg = channels // K
    # channels-last copies (batch, 1, L, channels); B/C are read in place as (b, i=0, j=t, slot=k, n)
    u_cl = u.detach().transpose(1, 2).to(torch.float32).contiguous().unsqueeze(1)
    d_cl = delta.detach().transpose(1, 2).to(torch.float32).contiguous().view(batch, 1, L, K, Dg)
    Bv = B.detach().permute(0, 3, 1, 2).unsqueeze(1)  # (b, 1, L, K, N) view
    Cv = C.detach().permute(0, 3, 1, 2).unsqueeze(1)
    y = _core_fwd(u_cl, d_cl, A, Bv, Cv, D, delta_bias, delta_softplus, K, 1, Dg, 1, L)
    return y.view(batch, L, channels).transpose(1, 2).to(out_dtype).contiguous(), ()


def scan_bwd(u, delta, A, B, C, D, delta_bias, delta_softplus, dy, saved):
    """All seven gradients (du, ddelta, dA, dB, dC, dD, ddelta_bias) in the dtypes of their inputs."""
    if _is_f64(u, delta, B, C):
        ts = _torch_backend()
        _, saved64 = ts.scan_fwd(u, delta, A, B, C, D, delta_bias, delta_softplus, u.dtype)
        return ts.scan_bwd(u, delta, A, B, C, D, delta_bias, delta_softplus, dy, saved64)
    batch, channels, L = u.shape
    K = B.shape[1]
    Dg = channels // K
    u_cl = u.detach().transpose(1, 2).to(torch.float32).contiguous().unsqueeze(1)
    d_cl = delta.detach().transpose(1, 2).to(torch.float32).contiguous().view(batch, 1, L, K, Dg)
    dy_cl = dy.detach().transpose(1, 2).to(torch.float32).contiguous().unsqueeze(1)
    Bv = B.detach().permute(0, 3, 1, 2).unsqueeze(1)
    Cv = C.detach().permute(0, 3, 1, 2).unsqueeze(1)
    du, ddt, dA, dB, dC, dD, dbias = _core_bwd(u_cl, d_cl, A, Bv, Cv, D, delta_bias, delta_softplus, dy_cl,
                                               K, 1, Dg, 1, L)
    first = lambda t, dtype: t.view(batch, L, channels).transpose(1, 2).to(dtype).contiguous()  # noqa: E731
    groups = lambda t, dtype: t.view(batch, L, K, -1).permute(0, 2, 3, 1).to(dtype).contiguous()  # noqa: E731
    return (first(du, u.dtype), first(ddt, delta.dtype), dA.to(A.dtype), groups(dB, B.dtype), groups(dC, C.dtype),
            None if dD is None else dD.to(D.dtype), None if dbias is None else dbias.to(delta_bias.dtype))


def ss2d_fwd(x, delta, A, B, C, D, delta_bias, delta_softplus):
    """Fused SS2D forward on channels-last operands: x (batch, H, W, Dm), delta (batch, H, W, 4, Dm),
    B/C (batch, H, W, 4, N). Returns ``(y (batch, H, W, Dm) fp32, ())``."""
    if _is_f64(x, delta, B, C):
        return _torch_backend().ss2d_fwd(x, delta, A, B, C, D, delta_bias, delta_softplus)[0], ()
    batch, H, W, Dm = x.shape
    y = _core_fwd(x, delta, A, B, C, D, delta_bias, delta_softplus, 1, 4, Dm, H, W)
    return y, ()


def ss2d_bwd(x, delta, A, B, C, D, delta_bias, delta_softplus, dy, saved):
    """Fused SS2D backward: (dx, ddelta, dA, dB, dC, dD, ddelta_bias) in the shapes and dtypes of the inputs."""
    if _is_f64(x, delta, B, C):
        ts = _torch_backend()
        _, saved64 = ts.ss2d_fwd(x, delta, A, B, C, D, delta_bias, delta_softplus)
        return ts.ss2d_bwd(x, delta, A, B, C, D, delta_bias, delta_softplus, dy, saved64)
    batch, H, W, Dm = x.shape
    dx, ddelta, dA, dB, dC, dD, dbias = _core_bwd(x, delta, A, B, C, D, delta_bias, delta_softplus, dy,
                                                  1, 4, Dm, H, W)
    return (dx.to(x.dtype), ddelta.to(delta.dtype), dA.to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
            None if dD is None else dD.to(D.dtype), None if dbias is None else dbias.to(delta_bias.dtype))
