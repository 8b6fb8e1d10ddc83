"""Run compiled CPU kernels on torch's own OpenMP thread team.

Why: torch's OpenMP worker threads do not sleep when a parallel region ends: libgomp spins them for a while
(``GOMP_SPINCOUNT``) waiting for the next region. A second thread pool that starts right after a torch op
(the numba scan follows dt_proj) shares its cores with those spinning threads: measured at 2 threads, VMamba-T
stage 1 batch 8, the pool worker's tasks took 7.6 ms instead of 3.2 ms and the op 21 ms instead of 16 ms
(``GOMP_SPINCOUNT=1000`` gave 16 ms). Handing the work to the same team through ``GOMP_parallel`` uses exactly
the threads that are spinning for work, so nothing competes.

How: a kernel is wrapped in a numba ``cfunc`` ``void f(int64 *block)``; the *block* holds a task counter and the
addresses of the runtime's ``GOMP_atomic_start``/``GOMP_atomic_end`` (a header of :data:`HEADER` slots), then
three slots per kernel argument: (address, shape0, shape1) of a C-contiguous array, or the value of an integer.
Every thread of the team takes whole tasks from the counter (:func:`next_range`) until none are left, so a core
that is busy elsewhere just takes fewer. Results must not depend on which thread runs which task (the callers'
kernels write disjoint outputs per program).

The runtime is the OpenMP library loaded in this process for ATen (torch's bundled libgomp on Linux wheels;
LLVM's libomp and Intel's libiomp5 export the same GOMP entry points). Where ATen does not use OpenMP, no such
library is loaded, or ``VMAMBA_CPU_TEAM=0``, :func:`available` is False and callers use their own threads.
"""
import ctypes
import os

import numpy as np
import torch
from llvmlite import ir
from numba import carray as numba_carray, njit, types
from numba.extending import intrinsic

__all__ = ['HEADER', 'available', 'pack', 'run', 'next_range', 'arg_int', 'arg_f32', 'arg_f64', 'arg_i64',
           'arg_i64_2d']

#: Header slots of a block: n_items, tasks, next task, GOMP_atomic_start, GOMP_atomic_end.
HEADER = 5
_RUNTIME = []  # [(GOMP_parallel, GOMP_atomic_start address, GOMP_atomic_end address)] or [None]


def _find_runtime():
    if os.environ.get('VMAMBA_CPU_TEAM', '1') == '0':
        return None
    if 'parallel backend: OpenMP' not in torch.__config__.parallel_info():
        return None
    try:
        with open('/proc/self/maps') as f:
            paths = {line.split()[-1] for line in f if '/' in line}
    except OSError:
        return None
    names = ('libgomp', 'libiomp5', 'libomp')
    found = sorted((p for p in paths if os.path.basename(p).startswith(names) and '.so' in p),
                   key=lambda p: not p.startswith(os.path.dirname(torch.__file__)))  # torch's own first
    for path in found:
        try:
            lib = ctypes.CDLL(path)
            parallel = lib.GOMP_parallel
            start, end = (ctypes.cast(getattr(lib, s), ctypes.c_void_p).value
                          for s in ('GOMP_atomic_start', 'GOMP_atomic_end'))
        except (OSError, AttributeError):
            continue
        parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        parallel.restype = None
        return parallel, start, end
    return None


def available():
    """True when kernels can run on ATen's OpenMP team (found once per process)."""
    if not _RUNTIME:
        _RUNTIME.append(_find_runtime())
    return _RUNTIME[0] is not None


def pack(n_items, tasks, args):
    """The int64 block for a kernel call over [0, n_items) in ``tasks`` tasks with ``args`` (arrays must be
    C-contiguous, 1-D or 2-D; the caller keeps them alive until :func:`run` returns)."""
    _, start, end = _RUNTIME[0]
    blk = np.zeros(HEADER + 3 * len(args), np.int64)
    blk[:HEADER] = n_items, tasks, 0, start, end
    for k, v in enumerate(args):
        s = HEADER + 3 * k
        if isinstance(v, np.ndarray):
            if not v.flags.c_contiguous or v.ndim > 2:
                raise ValueError(f'omp_team.pack: argument {k} must be a C-contiguous 1-D or 2-D array')
            blk[s:s + 1 + v.ndim] = (v.ctypes.data,) + v.shape
        else:
            blk[s] = int(v)
    return blk


def run(cfunc, blk, threads):
    """Run ``cfunc(blk)`` on ``threads`` threads of the team (the calling thread is one); returns when all are
    done. The GIL is released meanwhile (a ctypes call)."""
    _RUNTIME[0][0](cfunc.address, blk.ctypes.data, threads, 0)


# ------------------------------------------------------------------------------------------------------------
# Inside the cfuncs
# ------------------------------------------------------------------------------------------------------------
@intrinsic
def _call_void(typingctx, addr):
    """Call the C function ``void f(void)`` at address ``addr``."""
    sig = types.void(types.int64)

    def codegen(context, builder, signature, args):
        fn = builder.inttoptr(args[0], ir.FunctionType(ir.VoidType(), []).as_pointer())
        builder.call(fn, [])
        return context.get_dummy_value()
    return sig, codegen


def _pointer(nbtype):
    @intrinsic
    def as_pointer(typingctx, addr):
        sig = types.CPointer(nbtype)(types.int64)

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(signature.return_type))
        return sig, codegen
    return as_pointer


_f32_ptr, _f64_ptr, _i64_ptr = _pointer(types.float32), _pointer(types.float64), _pointer(types.int64)
_JIT = dict(cache=os.environ.get('VMAMBA_NUMBA_NOCACHE') != '1', nogil=True)


@njit(**_JIT)
def _next_task(blk):
    """The next task index of the block's counter (>= tasks: none left)."""
    _call_void(blk[3])
    k = blk[2]
    blk[2] = k + 1
    _call_void(blk[4])
    return k


@njit(**_JIT)
def next_range(blk):
    """[p0, p1) of the block's next task: task k of n items in ``tasks`` tasks is n k / tasks .. n (k + 1) / tasks
    (as the callers' own pools split them); (0, 0) when none is left (tasks <= n, so a task never ends at 0)."""
    k = _next_task(blk)
    n, tasks = blk[0], blk[1]
    if k >= tasks:
        return 0, 0
    return n * k // tasks, n * (k + 1) // tasks


@njit(**_JIT)
def arg_int(blk, k):
    return blk[HEADER + 3 * k]


@njit(**_JIT)
def arg_f32(blk, k):
    s = HEADER + 3 * k
    return numba_carray(_f32_ptr(blk[s]), (blk[s + 1],))


@njit(**_JIT)
def arg_f64(blk, k):
    s = HEADER + 3 * k
    return numba_carray(_f64_ptr(blk[s]), (blk[s + 1],))


@njit(**_JIT)
def arg_i64(blk, k):
    s = HEADER + 3 * k
    return numba_carray(_i64_ptr(blk[s]), (blk[s + 1],))


@njit(**_JIT)
def arg_i64_2d(blk, k):
    s = HEADER + 3 * k
    return numba_carray(_i64_ptr(blk[s]), (blk[s + 1], blk[s + 2]))
