"""A model of the memory traffic of the fused SS2D Triton kernels, from their access pattern (no GPU needed).

Every load and store the SS2D kernels of :mod:`vmamba.ops.triton_backend` issue is counted as the 32-byte
sectors it requests from global memory, with no credit for caches (a sector read twice counts twice), launch by
launch, as :func:`~vmamba.ops.triton_backend.ss2d_fwd` / ``ss2d_bwd`` make them, with the geometry of their launch
plan (:mod:`vmamba.ops.triton_backend.plan`); host-side passes around the kernels are included. Against it
stands the ideal of the fused op: each operand read once, each result written once.

* forward: x, delta (4 routes), B, C read; y (fp32) written.
* backward: x, delta, B, C, dy (fp32) read; dx, d delta, dB, dC written in their inputs' dtypes.

``backward_extra_memory`` is what the backward allocates beyond its outputs (its workspaces), and
``saved_memory`` what the forward keeps for it (chunk- and segment-entry states).
"""
import math

import torch

from vmamba.ops.triton_backend import plan as P

__all__ = ['SECTOR', 'sectors', 'fused_traffic', 'ideal_bytes', 'input_bytes', 'backward_extra_memory',
           'saved_memory', 'traffic_records']

SECTOR = 32


def sectors(nbytes, offset=0):
    """32-byte sectors touched by a contiguous run of ``nbytes`` starting at byte ``offset``."""
    if nbytes <= 0:
        return 0
    return (offset + nbytes - 1) // SECTOR - offset // SECTOR + 1


class _Shape:
    """The kernels' own launch plan for a shape (see :func:`_plan`), with the valid rows of every chunk."""

    def __init__(self, batch, H, W, D, N, in_size, sm=P.REFERENCE_SM_COUNT):
        _, _, p = _plan(batch, H, W, D, N, in_size, sm)
        self.batch, self.H, self.W, self.D, self.N, self.s, self.L = batch, H, W, D, N, in_size, p.L
        self.BT, self.BD, self.warps, self.bBD, self.bwarps = p.BT, p.BD, p.warps, p.bwd_BD, p.bwd_warps
        self.n_chunks, self.n_segs, self.n_bsegs = p.n_chunks, p.n_segs, p.n_bsegs
        self.K, self.n_qrows = p.K, p.n_qrows  # superchunks of the backward's adjoint entries
        self.rows = [min(self.BT, self.L - c * self.BT) for c in range(self.n_chunks)]  # valid rows per chunk

    def blocks(self, bd):
        """Valid channels of each channel block."""
        return [min(bd, self.D - j) for j in range(0, self.D, bd)]


def _tile_sectors(sh, bd, elem):
    """Sectors of one [rows, channels] tile load or store, summed over chunks and channel blocks of one pair."""
    per_row = sum(sectors(c * elem, (j * bd) * elem) for j, c in enumerate(sh.blocks(bd)))
    return per_row * sum(sh.rows)


def _state_vectors(sh, bd, N, count):
    """Sectors of ``count`` [BD] fp32 loads or stores per state of a (..., N, D) array, over the blocks (an
    [N, BD] tile of such an array is N of them)."""
    return count * N * sum(sectors(c * 4) for c in sh.blocks(bd))


def fused_traffic(batch, H, W, D, N, in_size):
    """Bytes requested by the fused op's kernels: {'forward': ..., 'backward': ...}, per the module docstring."""
    sh = _Shape(batch, H, W, D, N, in_size)
    s, L, nc = in_size, sh.L, sh.n_chunks
    two, btwo = sh.n_segs > 1, sh.n_bsegs > 1
    rows = sum(sh.rows)  # = L
    fwd_blocks = len(sh.blocks(sh.BD))
    tile_in = _tile_sectors(sh, sh.BD, s)        # one half/fp32 input tile over the pair's sequence
    tile_f32 = _tile_sectors(sh, sh.BD, 4)       # one fp32 tile (y, dy)
    vec_f32 = sum(sectors(c * 4) for c in sh.blocks(sh.BD)) * nc  # one [BD] fp32 vector per chunk
    scalar_rows = rows * fwd_blocks * sh.warps   # one sector per row per scalar load, per warp
    # forward, per pair. Summary (bottom-up): x, the reverse delta, B per state, the [N, BD] entry store per
    # chunk; with several segments also the forward delta and B and the segment stores (2 states, 3 sums).
    summary = 2 * tile_in + N * scalar_rows + _state_vectors(sh, sh.BD, N, nc)
    if two:
        summary += tile_in + N * scalar_rows + sh.n_segs * (_state_vectors(sh, sh.BD, N, 2) + 3 * vec_f32 // nc)
    # main (top-down): x, both deltas, B/C of both routes per state (A is loaded once per program for N = 1,
    # per chunk and state otherwise), the reverse entries per state (stored back exact when there are several
    # segments, which also load 2 segment entries and 2 sums per program), y; the column pair also loads y
    main = 3 * tile_in + 4 * N * scalar_rows + _state_vectors(sh, sh.BD, N, nc) + tile_f32
    if N > 1:
        main += 2 * _state_vectors(sh, sh.BD, N, nc)
    if two:
        main += _state_vectors(sh, sh.BD, N, nc) + sh.n_segs * (_state_vectors(sh, sh.BD, N, 2) + 2 * vec_f32 // nc)
    fwd_pairs = 2 * (summary + main) + tile_f32
    # carry over segments: per (segment, route) read S (D*N) and the decay sums (D), write the entries (D*N)
    carry = lambda n: 4 * n * (2 * sectors(D * N * 4) + sectors(D * 4))  # noqa: E731
    fwd = (fwd_pairs + (carry(sh.n_segs) if two else 0)) * batch
    # backward, per pair. Summary (bottom-up, forward channel blocks): dy (fp32), the forward delta, C per
    # state, the adjoint entry store per superchunk (every chunk when K = 1) and state; with several segments
    # also the reverse delta and C and the segment stores (2 states, 3 sums).
    bsummary = tile_f32 + tile_in + N * scalar_rows + _state_vectors(sh, sh.BD, N, sh.n_qrows)
    if btwo:
        bsummary += tile_in + N * scalar_rows + sh.n_bsegs * (_state_vectors(sh, sh.BD, N, 2) + 3 * vec_f32 // nc)
    # main per channel block: x, dy, both deltas, B and C of both routes, the entry of both routes per state
    # (and A, for N > 1), the two d delta stores, the dx store (the column pair also loads it), dB/dC of both
    # routes per row (loaded again for the second and later blocks); per program the segment entries and sums
    b_blocks = sh.blocks(sh.bBD)
    btile_in = _tile_sectors(sh, sh.bBD, s)
    btile_f32 = _tile_sectors(sh, sh.bBD, 4)
    bvec = sum(sectors(c * 4) for c in b_blocks) * nc
    bscalar = rows * len(b_blocks) * sh.bwarps
    acc = s if len(b_blocks) == 1 else 4
    bc_row = sectors(N * acc) * rows
    bmain = (btile_in + btile_f32 + 2 * btile_in          # x, dy (fp32), the two routes' deltas
             + 4 * N * bscalar                            # B, C per route and state
             + 2 * _state_vectors(sh, sh.bBD, N, nc) * (2 if N > 1 else 1)  # the entries (and A) of both routes
             + 3 * btile_in                               # the two d delta stores, the dx store
             + 2 * 2 * bc_row * len(b_blocks)             # dB, dC of both routes, stored per block
             + 2 * 2 * bc_row * (len(b_blocks) - 1))      # ... and reloaded by the later blocks
    bmain += sh.n_bsegs * (_state_vectors(sh, sh.bBD, N, 3 if btwo else 1) + (2 * bvec // nc if btwo else 0))
    if sh.K > 1:  # superchunks: the recompute walks every chunk but the top one of each superchunk again (dy,
        # the forward delta, C and A per state, the scratch entry loaded and the next one stored), after copying
        # the stored entry of each superchunk to the scratch
        again = nc - sh.n_qrows
        bmain += (again / nc * (btile_f32 + btile_in + N * bscalar) + 3 * _state_vectors(sh, sh.bBD, N, again)
                  + 2 * _state_vectors(sh, sh.bBD, N, sh.n_qrows))
    bwd_pairs = 2 * (bsummary + bmain) + btile_in          # + the column pair's read of dx
    progs = sh.n_bsegs
    partials = batch * progs * (4 * D * N + 4 * D + D) * 4 * 2  # written by the kernels, read by torch.sum
    cast_bc = 0 if acc == s else 2 * batch * L * 4 * N * (4 + s)  # fp32 dB/dC accumulators -> B's dtype
    bwd = (bwd_pairs + (carry(sh.n_bsegs) if btwo else 0)) * batch * SECTOR + partials + cast_bc
    return {'forward': fwd * SECTOR, 'backward': bwd}


def ideal_bytes(batch, H, W, D, N, in_size, direction):
    """Each operand read once, each result written once (y and dy fp32)."""
    e = batch * H * W * D
    bc = 2 * batch * H * W * 4 * N * in_size
    if direction == 'forward':
        return 5 * e * in_size + bc + 4 * e
    return 5 * e * in_size + bc + 4 * e + 5 * e * in_size + bc


def input_bytes(batch, H, W, D, N, in_size):
    """Bytes of the op's inputs x, delta, B, C (the parameters are negligible)."""
    return batch * H * W * (5 * D + 8 * N) * in_size


def _plan(batch, H, W, D, N, in_size, sm=P.REFERENCE_SM_COUNT):
    """The kernels' own launch plan for this shape on a device with ``sm`` SMs (meta tensors, nothing runs)."""
    return P.meta_plan(batch, H, W, D, N, {2: torch.bfloat16, 4: torch.float32}[in_size], sm)


def backward_extra_memory(batch, H, W, D, N, in_size):
    """Bytes the backward allocates beyond its outputs, from the kernels' own list of workspaces
    (:func:`vmamba.ops.triton_backend.plan.bwd_workspaces`: the forward routes' adjoint entries (one per superchunk of
    K chunks, and the scratch the K entries in between are recomputed into, for N > 1), with several
    segments the segment summaries, for N > 1 the carried values' scratch, per-program partial sums and, when the
    channels span several blocks and B/C are half precision, fp32 dB/dC sums)."""
    x, _, p = _plan(batch, H, W, D, N, in_size)
    return sum(math.prod(shape) * torch.empty((), dtype=dtype).element_size()
               for shape, dtype in P.bwd_workspaces(p, x.dtype).values())


def saved_memory(batch, H, W, D, N):
    """Bytes the forward saves for the backward besides its inputs (the tensors of
    :func:`vmamba.ops.triton_backend.plan.saved_shapes`, what ``ss2d_saved_like`` allocates: the reverse routes'
    chunk-entry states and every route's segment-entry states, fp32)."""
    _, _, p = _plan(batch, H, W, D, N, 2)
    return sum(math.prod(shape) * 4 for shape in P.saved_shapes(p))


def traffic_records(shapes, in_size=2):
    """One record per (shape, direction): bytes moved, the ideal, the backward's extra memory, the input bytes
    and the saved memory."""
    out = []
    for name, (batch, H, W, D, N) in shapes.items():
        moved = fused_traffic(batch, H, W, D, N, in_size)
        for direction in ('forward', 'backward'):
            out.append(dict(shape=name, design='fused_v2', direction=direction, bytes=int(moved[direction]),
                            ideal_bytes=int(ideal_bytes(batch, H, W, D, N, in_size, direction)),
                            extra_memory_bytes=int(backward_extra_memory(batch, H, W, D, N, in_size))
                            if direction == 'backward' else 0,
                            input_bytes=int(input_bytes(batch, H, W, D, N, in_size)),
                            saved_bytes=int(saved_memory(batch, H, W, D, N))))
    return out


def ratio(record):
    return record['bytes'] / record['ideal_bytes'] if record['ideal_bytes'] else math.nan
