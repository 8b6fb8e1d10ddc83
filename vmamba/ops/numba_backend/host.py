"""Host side of the compiled CPU scan: operands as flat fp32 buffers + strides, the split into programs and tasks,
and where the tasks run.

* A call uses ``min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)`` threads, each taking tasks of
  whole programs (a few tasks per thread, which balances unequal programs and busy cores). They are torch's own
  OpenMP team where ATen runs on OpenMP (:mod:`.team`), else this backend's pool (:mod:`.pool`). Results do not
  depend on the split: every program writes its own outputs.
* Kernel arguments are passed by name (:func:`run_tasks`) and ordered by the kernel's signature, the one
  declaration of its argument list.
* Forward block widths follow the thread count (per-channel arithmetic: the split cannot change a result); the
  backward's are fixed by the sizes alone, since its dB / dC sums run block by block.
* Operands are read in place where they are fp32 with a unit channel stride (slices of one x_proj output,
  route-major delta); anything else is converted once.
"""
import inspect

import numba
import numpy as np
import torch

from . import pool, team
from .kernels import CB, SEGMENT_FLOATS, STRIP, bwd_programs, compile_flat_loops, fwd_programs, sum_blocks

__all__ = ['n_threads', 'run_tasks', 'core_fwd', 'core_bwd']


def n_threads():
    """Threads a call uses: ``torch.get_num_threads()``, at most ``numba.config.NUMBA_NUM_THREADS``."""
    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


def run_tasks(kernel, n_items, **named):
    """``kernel(p0, p1, **named)`` over [0, n_items), split into tasks of whole programs, on :func:`n_threads`
    threads (the calling one included): torch's OpenMP team where available, else the pool."""
    if n_items <= 0:
        return
    args = inspect.signature(kernel.py_func).bind(0, 0, **named).args[2:]
    compile_flat_loops()
    threads = min(n_threads(), n_items)
    if threads == 1:
        kernel(0, n_items, *args)
        return
    tasks = min(n_items, 4 * threads)
    if team.available():  # its threads are spinning for work anyway (see .team)
        team.run(team.task_cfunc(kernel), team.pack(kernel, n_items, tasks, args), threads)
    else:
        pool.run(kernel, n_items, tasks, threads, args)


def _cdiv(a, b):
    return -(-a // b)


def _block_width(Dg, nblk):
    """Width (a multiple of 8, at most CB) of nblk near-equal blocks of Dg channels."""
    return max(1, min(CB, _cdiv(_cdiv(Dg, nblk), 8) * 8))


def _fwd_block(Dg, units):
    """Forward block width: blocks of <= CB channels, more of them when units (batch x groups) programs would
    leave threads idle."""
    nblk = _cdiv(Dg, CB)
    threads = n_threads()
    if units * nblk < threads:
        nblk = min(_cdiv(Dg, 8), _cdiv(threads, units))
    return _block_width(Dg, nblk)


def _bwd_block(Dg):
    """Backward block width: fixed by Dg alone (dB/dC are summed over channels block by block)."""
    return _block_width(Dg, _cdiv(Dg, CB))


def segment_len(L, N):
    """Positions per backward segment (recomputed from the state stored at its start): a multiple of STRIP with
    about SEGMENT_FLOATS floats of segment scratch."""
    T = max(STRIP, SEGMENT_FLOATS // ((2 * N + 5) * CB) // STRIP * STRIP)
    return min(T, _cdiv(L, STRIP) * STRIP)


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


def _strides(t):
    return np.asarray(t.stride(), dtype=np.int64)


def _operands(x, delta, A, B, C, D, delta_bias, rows, H, W):
    """The kernel arguments every kernel call shares, by name."""
    xb, xs = _buffer(x)
    db, ds = _buffer(delta)
    Bb, bs = _buffer(B, unit_last=False)
    Cb, cs = _buffer(C, unit_last=False)
    ii, jj = _index_tables(H, W)
    return dict(x=xb, xs=xs, dl=db, ds=ds, Bm=Bb, bs=bs, Cm=Cb, cs=cs, A=_param(A, rows), Dp=_param(D, rows),
                bias=_param(delta_bias, rows), ii=ii, jj=jj)


def core_fwd(x, delta, A, B, C, D, delta_bias, softplus, G, R, Dg, H, W):
    """y (b, H, W, G*Dg) fp32 for channels-last operands: x (b, H, W, G*Dg), delta (b, H, W, G*R, Dg),
    B/C (b, H, W, G*R, N); route r of group g uses delta/B/C slot g*R + r and parameter rows (g*R + r)*Dg + c."""
    batch, N = x.shape[0], A.shape[1]
    operands = _operands(x, delta, A, B, C, D, delta_bias, G * R * Dg, H, W)
    y = torch.zeros((batch, H, W, G * Dg), dtype=torch.float32)
    if y.numel():
        bw = _fwd_block(Dg, batch * G)
        run_tasks(fwd_programs, batch * G * _cdiv(Dg, bw), bw=bw, **operands, y=y.numpy().reshape(-1),
                  ys=_strides(y), G=G, R=R, Dg=Dg, N=N, L=H * W, softplus=bool(softplus))
    return y


def core_bwd(x, delta, A, B, C, D, delta_bias, softplus, dy, G, R, Dg, H, W):
    """(dx (b, H, W, G*Dg), ddelta (b, H, W, G*R, Dg), dA (G*R*Dg, N), dB/dC (b, H, W, G*R, N), dD, dbias)
    fp32 (dD / dbias None when D / delta_bias are)."""
    batch, N = x.shape[0], A.shape[1]
    L = H * W
    S = G * R
    rows = S * Dg
    operands = _operands(x, delta, A, B, C, D, delta_bias, rows, H, W)
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
    if dx.numel():
        run_tasks(bwd_programs, batch * G * nblk, bw=bw, **operands, dy=yb, dys=ys, dx=dx.numpy().reshape(-1),
                  dxs=_strides(dx), ddl=ddelta.numpy().reshape(-1), dds=_strides(ddelta), dA_p=dA_p.reshape(-1),
                  dD_p=dD_p.reshape(-1), dbias_p=dbias_p.reshape(-1), dB_p=dB_p, dC_p=dC_p, batch=batch, G=G, R=R,
                  Dg=Dg, N=N, L=L, W=W, T=segment_len(L, N), softplus=bool(softplus))
        if nblk > 1:
            run_tasks(sum_blocks, size, part=dB_p, out=dB.numpy().reshape(-1), nblk=nblk, size=size)
            run_tasks(sum_blocks, size, part=dC_p, out=dC.numpy().reshape(-1), nblk=nblk, size=size)
    # over the batch, in order (numpy adds the rows of an axis-0 sum one after the other)
    dA = torch.from_numpy(dA_p.sum(0).astype(np.float32).reshape(rows, N))
    dD = torch.from_numpy(dD_p.sum(0).astype(np.float32)) if D is not None else None
    dbias = torch.from_numpy(dbias_p.sum(0).astype(np.float32)) if delta_bias is not None else None
    return dx, ddelta, dA, dB, dC, dD, dbias
