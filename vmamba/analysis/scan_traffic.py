"""A model of the memory traffic of the fused SS2D Triton kernels, from their access pattern (no GPU needed).

Every load and store the kernels of :mod:`vmamba.ops.triton_ss2d` issue is counted as the 32-byte sectors it
requests from global memory, with no credit for caches (a sector read twice counts twice), launch by launch,
as :func:`~vmamba.ops.triton_ss2d.ss2d_fwd` / ``ss2d_bwd`` make them; host-side passes around the kernels are
included. Against it stands the ideal of the fused op: each operand read once, each result written once.

* forward: x, delta (4 routes), B, C read; y (fp32) written.
* backward: x, delta, B, C, dy (fp32) read; dx, d delta, dB, dC written in their inputs' dtypes.

``backward_extra_memory`` is what the backward allocates beyond its outputs (its workspaces), and
``saved_memory`` what the forward keeps for it (chunk-entry states and decay sums).
"""
import math

from vmamba.ops import triton_ss2d as T

__all__ = ['SECTOR', 'sectors', 'fused_traffic', 'ideal_bytes', 'input_bytes', 'backward_extra_memory',
           'saved_memory', 'traffic_records']

SECTOR = 32


def sectors(nbytes, offset=0):
    """32-byte sectors touched by a contiguous run of ``nbytes`` starting at byte ``offset``."""
    if nbytes <= 0:
        return 0
    return (offset + nbytes - 1) // SECTOR - offset // SECTOR + 1


class _Shape:
    def __init__(self, batch, H, W, D, N, in_size):
        self.batch, self.H, self.W, self.D, self.N, self.s = batch, H, W, D, N, in_size
        self.L = H * W
        self.BT, self.BD, self.VEC, self.warps = T.tile_config(D)
        _, self.bBD, _, self.bwarps = T.tile_config(D, backward=True)
        self.n_chunks = -(-self.L // self.BT)
        self.rows = [min(self.BT, self.L - c * self.BT) for c in range(self.n_chunks)]  # valid rows per chunk

    def blocks(self, bd):
        """Valid channels of each channel block."""
        return [min(bd, self.D - j) for j in range(0, self.D, bd)]


def _tile_sectors(sh, bd, elem):
    """Sectors of one [rows, channels] tile load or store, summed over chunks and channel blocks of one pair."""
    per_row = sum(sectors(c * elem, (j * bd) * elem) for j, c in enumerate(sh.blocks(bd)))
    return per_row * sum(sh.rows)


def fused_traffic(batch, H, W, D, N, in_size):
    """Bytes requested by the fused op's kernels: {'forward': ..., 'backward': ...}, per the module docstring."""
    sh = _Shape(batch, H, W, D, N, in_size)
    s, L, nc = in_size, sh.L, sh.n_chunks
    rows = sum(sh.rows)  # = L
    fwd_blocks = len(sh.blocks(sh.BD))
    tile_in = _tile_sectors(sh, sh.BD, s)        # one half/fp32 input tile over the pair's sequence
    tile_f32 = _tile_sectors(sh, sh.BD, 4)       # one fp32 tile (y)
    vec_f32 = sum(sectors(c * 4) for c in sh.blocks(sh.BD)) * nc  # one [BD] fp32 vector per chunk
    scalar_rows = rows * fwd_blocks * sh.warps   # one sector per row per scalar load, per warp
    per_pair = {}
    # forward, per pair: summary (x, 2 deltas, 2 B per state; 2 S per state + 2 decay sums), main (x, 2 deltas,
    # B and C of both routes per state, 2 entries per state, y store; the column pair also loads y)
    summary = 3 * tile_in + 2 * N * scalar_rows + 2 * N * vec_f32 + 2 * vec_f32
    main = 3 * tile_in + 4 * N * scalar_rows + 2 * N * vec_f32 + tile_f32
    per_pair['forward'] = 2 * (summary + main) + tile_f32  # + the column pair's read of y
    # carry: per (chunk, route) read S (D*N) and the decay sums (D), write the entries (D*N); 4 routes
    carry = 4 * nc * (2 * sectors(D * N * 4) + sectors(D * 4))
    fwd = (per_pair['forward'] + carry) * batch
    # backward, per pair: summary (dy fp32, 2 deltas, 2 C per state; 2 q-entries per state); main per channel
    # block: x, dy, 2 deltas, B and C of both routes, A/E/Q per state, 2 d delta stores, dx store (the column
    # pair also loads it), dB/dC of both routes per row (loaded again for the second and later blocks)
    b_blocks = sh.blocks(sh.bBD)
    btile_in = _tile_sectors(sh, sh.bBD, s)
    btile_f32 = _tile_sectors(sh, sh.bBD, 4)
    bvec = sum(sectors(c * 4) for c in b_blocks) * nc
    bscalar = rows * len(b_blocks) * sh.bwarps
    acc = s if len(b_blocks) == 1 else 4
    bc_row = sectors(N * acc) * rows
    bsummary = tile_f32 + 2 * tile_in + 2 * N * scalar_rows + 2 * N * vec_f32
    bmain = (btile_in + btile_f32 + 2 * btile_in      # x, dy (fp32), the two routes' deltas
             + 4 * N * bscalar + 6 * N * bvec          # B, C per route and state; A, E, Q per route and state
             + 3 * btile_in                            # the two d delta stores, the dx store
             + 2 * 2 * bc_row * len(b_blocks)          # dB, dC of both routes, stored per block
             + 2 * 2 * bc_row * (len(b_blocks) - 1))   # ... and reloaded by the later blocks
    bwd_pairs = 2 * (bsummary + bmain) + btile_in       # + the column pair's read of dx
    progs = -(-nc // T.bwd_chunks_per_program(nc, batch, L, D, N, in_size, 132))
    partials = batch * progs * (4 * D * N + 4 * D + D) * 4 * 2  # written by the kernels, read by torch.sum
    cast_bc = 0 if acc == s else 2 * batch * L * 4 * N * (4 + s)  # fp32 dB/dC accumulators -> B's dtype
    bwd = (bwd_pairs + carry) * batch * SECTOR + partials + cast_bc
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


def backward_extra_memory(batch, H, W, D, N, in_size):
    """Bytes the backward allocates beyond its outputs: adjoint entries, per-program partial sums and, when the
    channels span several blocks and B/C are half precision, fp32 dB/dC accumulators."""
    sh = _Shape(batch, H, W, D, N, in_size)
    adjoints = batch * sh.n_chunks * 4 * D * N * 4
    progs = -(-sh.n_chunks // T.bwd_chunks_per_program(sh.n_chunks, batch, sh.L, D, N, in_size, 132))
    partials = batch * progs * (4 * D * N + 4 * D + D) * 4
    blocks = len(sh.blocks(sh.bBD))
    acc = 0 if (blocks == 1 or in_size == 4) else 2 * batch * sh.L * 4 * N * 4
    return adjoints + partials + acc


def saved_memory(batch, H, W, D, N):
    """Bytes the forward saves for the backward besides its inputs: chunk-entry states and decay sums."""
    sh = _Shape(batch, H, W, D, N, 2)
    return batch * sh.n_chunks * 4 * D * (N + 1) * 4


def traffic_records(shapes, in_size=2):
    """One record per (shape, direction): the keys the issue asks for, plus the saved memory."""
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
