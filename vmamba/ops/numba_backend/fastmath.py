"""Fast fp32 transcendentals for the kernels, and the LLVM prefetch they use.

Why polynomials: the scan's cost is in softplus and exp (long dependency chains), not in the recurrence. libm
calls would stop LLVM from vectorising the kernels' loops; these are branch-free plain fp32 arithmetic (selects,
no calls), so they vectorise with the loops that call them.

* ``exp`` = Cody-Waite reduction ``x = n ln2 + r`` and a degree-6 polynomial (Estrin), ``2^n`` from the float
  bits of ``x log2(e) + 1.5 * 2^23 + 127`` shifted into the exponent field (a scalar ``float32.view(int32)``,
  which LLVM vectorises). The kernels' decays use ``2^(Δ A log2 e)`` (:func:`fexp2`) with ``A log2 e``
  precomputed per channel (as the CUDA kernel does).
* Inputs below -87.3 (exp) / -126 (exp2) are clamped there (result ~1e-38 instead of a denormal or 0); inputs
  above 88.03 / 127 clamp to ~1.7e38 (no inf); NaN propagates.
* ``softplus(z) = max(z, 0) + log1p(exp(-|z|))``, identity above 20 as torch, with ``log1p`` from the Cephes
  ``logf`` polynomial on the reduced argument (no ``1 + w`` rounding); ``sigmoid`` (softplus backward) =
  ``(1 or w) / (1 + w)`` with ``w = exp(-|z|)``.
* Accuracy against float64 is bounded by ``tests/ops/test_ops_numba.py::test_transcendentals`` (1.5 ulp for
  exp / exp2 / log1p, 2.5 for softplus, 3 for sigmoid).

:func:`prefetch` is an LLVM intrinsic: the column-major routes stride across pages, where the hardware
prefetcher gives up.
"""
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import JIT

__all__ = ['fexp', 'fexp2', 'flog1p', 'fsoftplus', 'fsigmoid', 'prefetch', 'LOG2E', 'LN2', 'ZERO', 'ONE']

_f32 = np.float32
# exp: x = n ln2 + r (ln2 = _C1 + _C2), |r| <= ln2 / 2; 2^n from the bits of x log2e + _MAGIC
LOG2E, _C1, _C2 = _f32(1.4426950408889634), _f32(0.693359375), _f32(-2.12194440e-4)
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
LN2, _SQRT2M1 = _f32(0.6931471805599453), _f32(0.41421356237309503)
ZERO, _HALF, ONE, _TWENTY = _f32(0.0), _f32(0.5), _f32(1.0), _f32(20.0)
_I23 = np.int32(23)


# ------------------------------------------------------------------------------------------------------------
# Scalar fp32 math, written so that LLVM vectorises it inside the loops (selects, no branches or calls).
# ------------------------------------------------------------------------------------------------------------
@njit(**JIT)
def _pow2i(t):
    """2^n for t = u + _MAGIC (t's low mantissa bits hold n + 127)."""
    return np.int32(np.float32(t).view(np.int32) << _I23).view(np.float32)


@njit(**JIT)
def fexp(x):
    """exp(x) in fp32 (~1 ulp); clamped to [-87.34, 88.03]; NaN -> NaN."""
    xc = _X_LO if x < _X_LO else x  # comparisons written so that NaN falls through
    xc = _X_HI if xc > _X_HI else xc
    t = xc * LOG2E + _MAGIC
    n = t - _MAGIC
    r = xc - n * _C1
    r = r - n * _C2
    r2 = r * r
    p = (r + _X1) + r2 * ((_X2 + _X3 * r) + r2 * ((_X4 + _X5 * r) + r2 * _X6))
    return p * _pow2i(t)


@njit(**JIT)
def fexp2(u):
    """2^u in fp32 (~1 ulp); clamped to [-126, 127]; NaN -> NaN."""
    uc = _U_LO if u < _U_LO else u
    uc = _U_HI if uc > _U_HI else uc
    t = uc + _MAGIC
    f = uc - (t - _MAGIC)
    f2 = f * f
    p = (_X1 + _P1 * f) + f2 * ((_P2 + _P3 * f) + f2 * ((_P4 + _P5 * f) + f2 * _P6))
    return p * _pow2i(t)


@njit(**JIT)
def flog1p(w):
    """log(1 + w) for w in [0, 1] (what softplus needs): log1p(f) + k ln2 with 1 + w = 2^k (1 + f)."""
    big = w > _SQRT2M1
    f = (w - ONE) * _HALF if big else w  # (1 + w) / 2 - 1, without rounding 1 + w
    z = f * f
    z2 = z * z
    p = ((_L8 + _L7 * f) + z * (_L6 + _L5 * f)) + z2 * (((_L4 + _L3 * f) + z * (_L2 + _L1 * f)) + z2 * _L0)
    y = f * z * p - _HALF * z + f
    return y + LN2 if big else y


@njit(**JIT)
def fsoftplus(z):
    """softplus(z) = log(1 + exp(z)), identity above 20 (torch's threshold)."""
    s = (z if z > ZERO else ZERO) + flog1p(fexp(-abs(z)))
    return z if z > _TWENTY else s


@njit(**JIT)
def fsigmoid(z):
    """sigmoid(z) = d softplus / dz; 1 above 20 (torch's softplus backward)."""
    w = fexp(-abs(z))
    s = (ONE if z >= ZERO else w) / (ONE + w)
    return ONE if z > _TWENTY else s


@intrinsic
def prefetch(typingctx, arr, idx):
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

