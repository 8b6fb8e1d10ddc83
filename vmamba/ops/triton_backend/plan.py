"""The launch plan of the Triton backend: every geometry constant and launch-shape decision, in one place.

The launchers (:mod:`.ss2d_launch`, :mod:`.selective_scan`), the tests, the traffic model
(:mod:`vmamba.analysis.scan_traffic`) and the compile-facts tool (:mod:`vmamba.analysis.compile_facts`) all read
the geometry from here, so a change of a tile size or of the segment split is seen by all of them at once. Nothing
here launches a kernel: a plan is plain numbers, and :func:`meta_plan` builds one from meta tensors (no device).

Words used throughout the SS2D modules:

* a **tile** is ``BT`` = :data:`TILE_ROWS` consecutive positions of one route pair's sequence by ``BD`` channels.
  Its positions all live in one thread's registers (the channels span the lanes), so one program *step* scans a
  tile with a register recurrence. The kernels and the plan call the tiles of a sequence its *chunks*
  (``c``, ``n_chunks``): the chunk is the step of the walk and the granularity of the saved entry states;
* a **segment** is the run of ``cpp`` chunks one program walks in order (one program per segment, channel block
  and image); a backward segment is a whole number ``fsegs_per_bseg`` of forward segments;
* a **superchunk** is the ``K`` chunks the backward stores one adjoint entry for (N > 1), recomputing the rest.

The plain op's geometry (:func:`block_config`) is different in kind: its tiles are ``(BD, BN, BL)`` with the
``BL`` positions (a *span*) across the lanes, so it has its own rules, also here.

Interpreter detection happens once, here (:data:`INTERPRET`): the kernels take the exact maths and the
interpreter's tile length from it.
"""
import os

import torch
import triton
import triton.language as tl

#: True when the kernels are interpreted (TRITON_INTERPRET=1 when triton was imported): they then accept CPU
#: tensors.
try:
    from triton import knobs
    INTERPRET = bool(knobs.runtime.interpret)
except ImportError:  # triton < 3.3 has no knobs module
    INTERPRET = os.environ.get('TRITON_INTERPRET', '0') == '1'

if INTERPRET and type(tl.zeros).__name__ == 'JITFunction':
    # triton.language's own helpers (tl.zeros, tl.sum, ...) were decorated when triton was first imported, with
    # the interpreter off; interpreted kernels then fail deep inside with "Cannot call @triton.jit'd outside of
    # the scope of a kernel". Say what to do instead.
    raise RuntimeError('TRITON_INTERPRET=1 was set after triton had been imported in this process; set it before '
                       'anything imports triton (e.g. in the environment of the command).')

__all__ = ['INTERPRET', 'GPU_TILE_ROWS', 'INTERPRETER_TILE_ROWS', 'TILE_ROWS', 'CARRY_SEGMENTS', 'CARRY_LANES',
           'CARRY_WARPS', 'PARTIALS_FRACTION', 'SUPERCHUNK', 'LaunchPlan', 'meta_plan', 'tile_config', 'segments',
           'superchunk', 'bwd_chunks_per_program', 'bwd_workspaces', 'saved_shapes', 'device_sm_count', 'block_config',
           'plain_min_programs']


# ------------------------------------------------------------------------------------------------ SS2D tiles
#: Positions per tile on the GPU: the length of the recurrence inside a thread and the granularity of the saved
#: chunk-entry states (8 rows of 4 fp32 channels: 32 registers per thread and tile).
GPU_TILE_ROWS = 8
#: The interpreter runs the same kernels with longer tiles (fewer Python-level iterations).
INTERPRETER_TILE_ROWS = 32
#: The tile length in use; tests may set it (e.g. to :data:`GPU_TILE_ROWS` under the interpreter).
TILE_ROWS = INTERPRETER_TILE_ROWS if INTERPRET else GPU_TILE_ROWS


def device_sm_count(device):
    """SMs to fill; 0 for a CPU device (the interpreter: few, long programs)."""
    if device.type != 'cuda':
        return 0
    return torch.cuda.get_device_properties(device).multi_processor_count


def _channel_block(dim, vec, max_warps, fewest_blocks):
    """(BD, warps): BD = 32 * vec * warps channels per block, wasting the fewest padded channels (VMamba's
    widths are 3 * 2^k: 96 and 192 pad up to 128-multiples, the others divide exactly); ties go to the smallest
    block (more programs) or, for the backward, which loops over the blocks itself, to the fewest blocks."""
    options = []
    for warps in (1, 2, 4, 8)[:max_warps.bit_length()]:
        bd = 32 * vec * warps
        blocks = -(-dim // bd)
        options.append((blocks * bd - dim, blocks if fewest_blocks else -blocks, bd, warps))
    _, _, bd, warps = min(options)
    return bd, warps


def tile_config(dim, backward=False, N=1):
    """(BT, BD, VEC, num_warps) of the forward or backward kernels.

    Forward: VEC = 4 channels per thread, so every position is one 8-byte (half) or 16-byte (fp32) vector load
    per thread and each [BT, BD] tile holds 32 fp32 registers per thread. Backward: VEC = 2 (its ten live tiles
    would not fit 255 registers at 4) and at most 2 warps (4 warps spilled more at stage 4, and reduce dB/dC
    across more warps through shared memory). For N > 1 the backward takes all channels in one block of up to
    4 warps when at most a quarter of it is padding (vanilla stage 1: 192 of 256): with several blocks and half
    B/C, dB/dC are summed over the blocks in fp32 buffers of 2 x 4N floats per position (24 % of the op's inputs
    at D = 192, N = 16).
    """
    vec = 2 if backward else 4
    if backward and N > 1:
        bd = 32 * vec * 4  # 256 channels, 4 warps
        if 3 * bd <= 4 * dim <= 4 * bd:  # one block, at most a quarter of it padding
            return TILE_ROWS, bd, vec, 4
    bd, warps = _channel_block(dim, vec, 2 if backward else 4, backward)
    return TILE_ROWS, bd, vec, warps


# --------------------------------------------------------------------------------------------- SS2D segments
def _chunks_per_program(n_chunks, rows, sm_count, target_per_sm=16):
    """Chunks each program walks: 1 when the grid would otherwise be too small to fill the device."""
    if sm_count == 0:  # interpreter: few, long programs
        return n_chunks
    per = max(1, (rows * n_chunks) // (sm_count * target_per_sm))
    return min(per, n_chunks)


#: The backward's per-program partial sums (dA, d(delta_bias), dD: 9 D N-ish floats per program) may take at most
#: this fraction of the op's input bytes; on small maps (7x7, 14x14) that means fewer, longer programs.
PARTIALS_FRACTION = 0.03


def bwd_chunks_per_program(n_chunks, batch, L, dim, N, in_size, sm_count):
    """Chunks per backward program: enough programs to fill the device, few enough that the partial sums stay
    within PARTIALS_FRACTION of the inputs."""
    per = _chunks_per_program(n_chunks, batch, sm_count, target_per_sm=8)
    partial = (4 * dim * N + 5 * dim) * 4  # bytes per program and image
    budget = PARTIALS_FRACTION * L * (5 * dim + 8 * N) * in_size
    max_programs = max(1, int(budget // partial))
    return min(n_chunks, max(per, -(-n_chunks // max_programs)))


def segments(batch, L, dim, N, in_size, sm_count):
    """(cpp, n_segs, fsegs_per_bseg, bwd_cpp, n_bsegs): chunks per forward segment and their count, forward
    segments per backward segment, chunks per backward segment and their count (see :class:`LaunchPlan`)."""
    BT, BD, _, _ = tile_config(dim)
    n_chunks = triton.cdiv(L, BT)
    cpp = _chunks_per_program(n_chunks, batch * triton.cdiv(dim, BD), sm_count)
    fsegs_per_bseg = triton.cdiv(bwd_chunks_per_program(n_chunks, batch, L, dim, N, in_size, sm_count), cpp)
    bwd_cpp = min(n_chunks, fsegs_per_bseg * cpp)
    return cpp, triton.cdiv(n_chunks, cpp), fsegs_per_bseg, bwd_cpp, triton.cdiv(n_chunks, bwd_cpp)


#: Tests may force the superchunk length (chunks per stored adjoint entry, N > 1); None: :func:`superchunk`.
SUPERCHUNK = None


def superchunk(n_chunks, bwd_cpp, n_bsegs, N):
    """Chunks per stored adjoint entry of the forward routes in the backward (1 for N = 1).

    For N > 1 the entries of every chunk would take 2 N fp32 per channel and chunk (1.2 GB for vanilla stage 1 at
    batch 128, 1.4x the op's inputs); the backward main kernel instead recomputes a superchunk's K entries from its
    stored one into a per-program scratch of K entries. Entries ~ n_chunks / K, scratch ~ n_bsegs * K: K near
    sqrt(2 n_chunks / n_bsegs) keeps their sum near its minimum."""
    if SUPERCHUNK is not None:
        return max(1, min(SUPERCHUNK, bwd_cpp))
    if N == 1:
        return 1
    return max(1, min(bwd_cpp, round((2 * n_chunks / n_bsegs) ** 0.5)))


#: SMs of the device the developer tools plan for when there is none (an H100 SXM); the kernels themselves plan
#: for the device they run on.
REFERENCE_SM_COUNT = 132

#: The segment carry kernel: segments per memory round trip (CB), (state, channel) lanes per program (BLK), warps.
CARRY_SEGMENTS = 16
CARRY_LANES = 128
CARRY_WARPS = 4


class LaunchPlan:
    """Launch geometry shared by the forward and the backward of one call.

    The sequence of each pair is cut into ``n_segs`` segments of ``cpp`` chunks, one program per (segment,
    channel block, image): as many as fill the device, one segment per sequence when the batch alone does
    (then no segment carry and no decay sums are needed: ``TWO_LEVEL`` is off). A backward segment is a whole
    number ``fsegs_per_bseg`` of forward segments, so that its programs start from a saved segment entry.
    """

    def __init__(self, x, A, sm_count=None):
        self.batch, self.H, self.W, self.dim = x.shape
        self.L = self.H * self.W
        self.N = A.shape[1]
        self.BN = triton.next_power_of_2(self.N)
        self.sm = device_sm_count(x.device) if sm_count is None else sm_count
        self.BT, self.BD, self.VEC, self.warps = tile_config(self.dim)
        _, self.bwd_BD, self.bwd_VEC, self.bwd_warps = tile_config(self.dim, backward=True, N=self.N)
        self.n_chunks = triton.cdiv(self.L, self.BT)
        self.n_blocks = triton.cdiv(self.dim, self.BD)
        self.bwd_blocks = triton.cdiv(self.dim, self.bwd_BD)
        (self.cpp, self.n_segs, self.fsegs_per_bseg, self.bwd_cpp,
         self.n_bsegs) = segments(self.batch, self.L, self.dim, self.N, x.element_size(), self.sm)
        # the forward routes' adjoint entries: one per superchunk of K chunks (see the backward main kernel),
        # n_sc per segment
        self.K = superchunk(self.n_chunks, self.bwd_cpp, self.n_bsegs, self.N)
        self.n_sc = triton.cdiv(self.bwd_cpp, self.K)
        self.n_qrows = (self.n_bsegs - 1) * self.n_sc + triton.cdiv(self.n_chunks - (self.n_bsegs - 1) * self.bwd_cpp,
                                                                    self.K)
        self.carry_blk = CARRY_LANES

    def grid(self, backward=False):
        return (self.n_bsegs if backward else self.n_segs, self.n_blocks, self.batch)

    def flags(self, delta_bias, delta_softplus, backward=False):
        bd, vec, warps = ((self.bwd_BD, self.bwd_VEC, self.bwd_warps) if backward else
                          (self.BD, self.VEC, self.warps))
        flags = dict(HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus), BT=self.BT, BD=bd, VEC=vec,
                     BN=self.BN, WRAP=self.H % self.BT != 0, num_warps=warps)
        if backward:
            flags['RECOMPUTE'] = self.K > 1
        return flags

    def summary_flags(self, delta_bias, delta_softplus):
        """Flags of the backward's summary launch: the forward's tiles, the backward's segments and superchunks."""
        return dict(self.flags(delta_bias, delta_softplus), TWO_LEVEL=self.n_bsegs > 1, RECOMPUTE=self.K > 1)

    def carry_grid(self):
        """Grid of the segment carry kernel: (state, channel) lanes, routes, images."""
        return (triton.cdiv(self.dim * self.N, self.carry_blk), 4, self.batch)

    def carry_flags(self, adjoint):
        return dict(ADJOINT=adjoint, CB=CARRY_SEGMENTS, BLK=self.carry_blk, num_warps=CARRY_WARPS)


def meta_plan(batch, H, W, D, N, dtype, sm_count):
    """(x, A, plan) of a call on x (batch, H, W, D) of ``dtype`` with d_state N on a device with ``sm_count``
    SMs, x and A as meta tensors (nothing allocated): for the tools that compile or price the kernels."""
    x = torch.empty(batch, H, W, D, device='meta', dtype=dtype)
    A = torch.empty(4 * D, N, device='meta')
    return x, A, LaunchPlan(x, A, sm_count)


def saved_shapes(p):
    """Shapes of the fp32 tensors the forward saves: the reverse routes' state entering every chunk and every
    route's state entering every segment."""
    return (p.batch, p.n_chunks, 2, p.dim, p.N), (p.batch, p.n_segs, 4, p.dim, p.N)


def bwd_workspaces(p, B_dtype):
    """name -> (shape, dtype) of every buffer the backward allocates beyond its outputs, for plan ``p``; the
    traffic model (vmamba/analysis/scan_traffic.py) prices the backward's extra memory from this."""
    f32 = torch.float32
    w = {'adjoint_entries': ((p.batch, p.n_qrows, 2, p.dim, p.N), f32)}  # forward routes', every superchunk
    if p.K > 1:  # a superchunk's entries, recomputed by the main kernel (see superchunk)
        w['entry_scratch'] = ((p.batch, p.n_bsegs, p.K, p.dim, p.N), f32)
    if p.n_bsegs > 1:  # segment summaries, then entries; their decay sums and the compensation terms
        w['segments'] = ((p.batch, p.n_bsegs, 4, p.dim, p.N), f32)
        w['segment_decay'] = ((p.batch, p.n_bsegs, 4, p.dim), f32)
        w['segment_lo'] = ((p.batch, p.n_bsegs, 2, p.dim), f32)
    if p.N > 1:  # the carried values (see ss2d_shared._carried)
        w['scratch'] = ((p.batch, p.n_bsegs, 2, p.dim, p.N), f32)
    w['partial_A'] = ((p.batch, p.n_bsegs, 4, p.dim, p.N), f32)
    w['partial_D'] = ((p.batch, p.n_bsegs, p.dim), f32)
    w['partial_bias'] = ((p.batch, p.n_bsegs, 4, p.dim), f32)
    if p.bwd_blocks > 1 and B_dtype != f32:  # dB/dC summed over channel blocks in fp32, then cast
        w['dB_sum'] = w['dC_sum'] = ((p.batch, p.H, p.W, 4, p.N), f32)
    return w


# ------------------------------------------------------------------------------------------------ plain op
#: Register budget: elements of one (BD, BN, BL) fp32 tile per 4 warps in the plain op's forward / backward
#: programs (ptxas for sm_90: ~90 registers per thread at these sizes, no spills; 2x larger tiles need ~200).
PLAIN_FWD_ELEMS = 1024
PLAIN_BWD_ELEMS = 512
#: Programs per SM that fill the device for the plain op.
PLAIN_PROGRAMS_PER_SM = 4


def _pow2_divisor(n, cap):
    """Largest power of two dividing n, at most cap."""
    p = 1
    while p * 2 <= cap and n % (p * 2) == 0:
        p *= 2
    return p


def plain_min_programs(device):
    """Programs needed to fill the device with the plain op (a few per SM); the interpreter has no SMs to fill."""
    if device.type != 'cuda':
        return 1
    return PLAIN_PROGRAMS_PER_SM * device_sm_count(device)


def block_config(length, d_state, group_channels, rows=1, min_programs=1):
    """(BN, BL, BD_fwd, BD_bwd, num_warps_bwd) of the plain op for ``rows`` = batch x channels sequences.

    BL (the span of positions one step scans) must agree between forward and backward. BD (channels per program,
    a power of two dividing the group size) fills the register budget, then halves while there are too few
    programs to occupy the device (long sequences at small batch, e.g. detection). A backward tile of one channel
    that is still over budget (d_state >= 16) gets 8 warps instead of 4.
    """
    BN = triton.next_power_of_2(d_state)
    BL = max(16, min(triton.next_power_of_2(length), 256, PLAIN_FWD_ELEMS // BN))

    def channels_per_program(budget):
        bd = _pow2_divisor(group_channels, max(1, budget // (BN * BL)))
        while bd > 1 and rows // bd < min_programs:
            bd //= 2
        return bd

    warps_bwd = 4 if BN * BL <= PLAIN_BWD_ELEMS else 8
    return BN, BL, channels_per_program(PLAIN_FWD_ELEMS), channels_per_program(PLAIN_BWD_ELEMS), warps_bwd
