"""Run the task kernels on torch's own OpenMP thread team.

Why: torch's OpenMP worker threads do not sleep when a parallel region ends: libgomp spins them for a while
(``GOMP_SPINCOUNT``) waiting for the next region. A second thread pool that starts right after a torch op
(the numba scan follows dt_proj) shares its cores with those spinning threads, and its tasks slow down.
Handing the work to the same team through ``GOMP_parallel`` uses exactly the threads that are spinning for
work, so nothing competes.

How: a task kernel ``kernel(p0, p1, *args)`` runs as a numba ``cfunc`` ``void f(int64 *block)``. The *block*
holds a header of :data:`HEADER` slots (n_items, tasks, the task counter, the addresses of the runtime's
``GOMP_atomic_start``/``GOMP_atomic_end`` and of the kernel's compiled function), then the kernel's arguments in
order: an integer or bool in one slot, a C-contiguous array as its address and shape (1 + ndim slots). The
layout comes from one place, the kernel's own signature (its parameters after ``p0, p1`` are annotated with
numba types, see :mod:`.kernels`): :func:`pack` writes the block from it on the host, and one intrinsic
(:func:`_call_kernel`) reads it back into the kernel's arguments inside the cfunc (:func:`_read_args`) and
calls the kernel's own machine code through the block's address (why not by name: :func:`task_cfunc`), the
code a single-threaded call runs, so results do not depend on the path. Every thread of the team takes whole
tasks from the counter (:func:`next_range`) until none are left, so a core that is busy elsewhere just takes
fewer. Results must not
depend on which thread runs which task (the kernels write disjoint outputs per program).

The cfunc of a kernel is one closure (:func:`_task_loop`) that names its kernel by a string, resolved at compile
time to its argument layout (:func:`_call_kernel`): numba's cache keys a closure by its captured values, which a
string keeps stable across processes (a captured dispatcher would not).

The runtime is the OpenMP library loaded in this process for ATen (torch's bundled libgomp on Linux wheels;
LLVM's libomp and Intel's libiomp5 export the same GOMP entry points). Where ATen does not use OpenMP, no such
library is loaded, or ``VMAMBA_CPU_TEAM=0``, :func:`available` is False and callers use their own threads
(:mod:`.pool`).
"""
import ctypes
import inspect
import os

import numpy as np
import torch
from llvmlite import ir
from numba import carray, cfunc, njit, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import populate_array
from numba.np.numpy_support import as_dtype

from .jit import CFUNC, COMPILE_LOCK

__all__ = ['HEADER', 'available', 'layout', 'pack', 'run', 'task_cfunc', 'next_range']

#: Header slots of a block: n_items, tasks, next task, GOMP_atomic_start, GOMP_atomic_end, the kernel's address.
HEADER = 6
#: Header slot of the address of the kernel's compiled function (see :func:`task_cfunc`).
ENTRY = 5
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


# ------------------------------------------------------------------------------------------------------------
# The argument block, declared by the kernel's signature
# ------------------------------------------------------------------------------------------------------------
_SCALARS = (types.int64, types.boolean)


def layout(kernel):
    """The numba types of ``kernel``'s arguments after ``(p0, p1)``, from its annotations (one per parameter:
    int64, boolean, or a C-contiguous 1-D / 2-D array)."""
    params = list(inspect.signature(kernel.py_func).parameters.values())
    if [p.name for p in params[:2]] != ['p0', 'p1']:
        raise TypeError(f'{kernel.__name__}: a task kernel starts with (p0, p1)')
    for p in params[2:]:
        t = p.annotation
        if t not in _SCALARS and not (isinstance(t, types.Array) and t.layout == 'C' and t.ndim in (1, 2)):
            raise TypeError(f'{kernel.__name__}: parameter {p.name} needs a numba type annotation '
                            '(int64, boolean, or a C-contiguous 1-D / 2-D array)')
    return tuple(p.annotation for p in params[2:])


def _signature(kernel):
    """The argument types of ``kernel`` in a block's call: ``(p0, p1)``, then its :func:`layout`."""
    return (types.int64, types.int64) + layout(kernel)


def _slots(t):
    """Block slots of one argument of type t."""
    return 1 + t.ndim if isinstance(t, types.Array) else 1


def pack(kernel, n_items, tasks, args):
    """The int64 block for ``kernel`` over [0, n_items) in ``tasks`` tasks with ``args`` (checked against the
    kernel's annotations; the caller keeps the arrays alive until :func:`run` returns)."""
    _, start, end = _RUNTIME[0]
    task_cfunc(kernel)  # the kernel's address, once per process
    declared = layout(kernel)
    if len(args) != len(declared):
        raise TypeError(f'{kernel.__name__} takes {len(declared)} arguments after (p0, p1), got {len(args)}')
    blk = np.zeros(HEADER + sum(map(_slots, declared)), np.int64)
    blk[:HEADER] = n_items, tasks, 0, start, end, _CFUNCS[kernel][1]
    s = HEADER
    for k, (t, v) in enumerate(zip(declared, args)):
        if isinstance(t, types.Array):
            if not (isinstance(v, np.ndarray) and v.dtype == as_dtype(t.dtype) and v.ndim == t.ndim
                    and v.flags.c_contiguous):
                raise TypeError(f'{kernel.__name__}: argument {k} must be a C-contiguous {t}')
            blk[s:s + 1 + v.ndim] = (v.ctypes.data,) + v.shape
        else:
            blk[s] = int(v)
        s += _slots(t)
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


@njit(**CFUNC)
def _next_task(blk):
    """The next task index of the block's counter (>= tasks: none left)."""
    _call_void(blk[3])
    k = blk[2]
    blk[2] = k + 1
    _call_void(blk[4])
    return k


@njit(**CFUNC)
def next_range(blk):
    """[p0, p1) of the block's next task: task k of n items in ``tasks`` tasks is n k / tasks .. n (k + 1) / tasks
    (as :mod:`.pool` splits them); (0, 0) when none is left (tasks <= n, so a task never ends at 0)."""
    k = _next_task(blk)
    n, tasks = blk[0], blk[1]
    if k >= tasks:
        return 0, 0
    return n * k // tasks, n * (k + 1) // tasks


_KERNELS = {}  # name -> task kernel, for the cfuncs' compile-time lookup


def _read_args(context, builder, data, declared):
    """The values of arguments ``declared`` read from the block at ``data`` (an ``i64*``): the inverse of
    :func:`pack`. Arrays are views of the caller's memory (no meminfo)."""
    i64 = ir.IntType(64)
    values, s = [], HEADER
    for t in declared:
        slot = [builder.load(builder.gep(data, [i64(s + q)])) for q in range(_slots(t))]
        if t == types.boolean:
            values.append(builder.icmp_signed('!=', slot[0], i64(0)))
        elif t == types.int64:
            values.append(slot[0])
        else:
            item = context.get_abi_sizeof(context.get_data_type(t.dtype))
            shape = slot[1:]
            strides = [i64(item)] if t.ndim == 1 else [builder.mul(shape[1], i64(item)), i64(item)]
            ary = context.make_array(t)(context, builder)
            ptr = builder.inttoptr(slot[0], context.get_data_type(t.dtype).as_pointer())
            populate_array(ary, data=ptr, shape=shape, strides=strides, itemsize=i64(item), meminfo=None)
            values.append(ary._getvalue())
        s += _slots(t)
    return values


@intrinsic
def _call_kernel(typingctx, blk, p0, p1, name):
    """``kernel(p0, p1, *args)`` for the kernel registered as ``name`` (a string literal), its arguments read
    from the block, called through the block's :data:`ENTRY` address: the kernel's own compiled code, not a
    copy of it (see :func:`task_cfunc`)."""
    if not isinstance(name, types.StringLiteral):
        return None  # numba retries with the literal
    argtypes = _signature(_KERNELS[name.literal_value])
    sig = types.void(blk, p0, p1, name)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        values = [args[1], args[2]] + _read_args(context, builder, data, argtypes[2:])
        fnty = context.call_conv.get_function_type(types.none, argtypes)
        entry = builder.load(builder.gep(data, [ir.IntType(64)(ENTRY)]))
        fn = builder.inttoptr(entry, fnty.as_pointer())
        status, _ = context.call_conv.call_function(builder, fn, types.none, argtypes, values)
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return context.get_dummy_value()
    return sig, codegen


def _task_loop(name, size):
    """The body of a kernel's cfunc: take tasks from the block until none are left."""
    def task_loop(ptr):
        blk = carray(ptr, (size,))
        while True:
            p0, p1 = next_range(blk)
            if p1 == 0:
                return
            _call_kernel(blk, p0, p1, name)
    return task_loop


_CFUNCS = {}  # kernel -> (its compiled cfunc, the address of the kernel's own compiled function)


def task_cfunc(kernel):
    """The cfunc that runs task kernel ``kernel`` on the team (compiled, or loaded from numba's cache, once per
    process; callers compile the kernels' flat loops first, see :func:`.kernels.compile_flat_loops`).

    The cfunc calls the kernel through an address in the block (:data:`ENTRY`, written by :func:`pack`), that of
    the kernel's own compilation for its declared signature, the one a single-threaded or pool call runs. It
    must not call the kernel by symbol: numba would link a copy of the kernel into the cfunc's module and
    optimise it again there (not the same machine code: FMA contraction and vectorisation differ after the
    second pass), as a weak definition, and which definition of the symbol a call runs would then depend on which
    of the two objects the process loaded first (from numba's cache, the cfunc's when the first call was
    multi-threaded): results 1 ulp off the single-threaded ones."""
    with COMPILE_LOCK:
        if kernel not in _CFUNCS:
            name = f'{kernel.py_func.__module__}.{kernel.py_func.__qualname__}'
            _KERNELS[name] = kernel
            kernel.compile(_signature(kernel))  # or loaded from cache: the overload a direct call runs
            cres = kernel.overloads[_signature(kernel)]
            entry = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
            size = HEADER + sum(map(_slots, layout(kernel)))
            fn = cfunc(types.void(types.CPointer(types.int64)), **CFUNC)(_task_loop(name, size))
            _CFUNCS[kernel] = fn, entry
    return _CFUNCS[kernel][0]
