"""The Triton backend of the scan ops, the default for CUDA tensors (the interface :mod:`vmamba.ops.dispatch` uses).

With ``TRITON_INTERPRET=1`` set before triton is imported, the kernels run on CPU tensors (that is how CI tests
them; :data:`INTERPRET`).

Modules, one concern each:

* :mod:`.plan`: the launch plan, every geometry constant (tile sizes, warps, segments, superchunks,
  workspaces) and the interpreter detection; read by the launchers, the tests and the analysis tools;
* :mod:`.ss2d_shared`: the @triton.jit helpers both SS2D directions use, and the segment carry kernel;
* :mod:`.ss2d_forward` / :mod:`.ss2d_backward`: the SS2D kernels of each direction;
* :mod:`.ss2d_launch`: the SS2D host side (:func:`ss2d_fwd`, :func:`ss2d_bwd`, :func:`ss2d_saved_like`);
* :mod:`.selective_scan`: the plain op's kernels and host side (:func:`scan_fwd`, :func:`scan_bwd`,
  :func:`scan_saved_like`).

The fused SS2D op (v2): channels-last operands, route pairs, chunk-parallel scans. A *chunk* here is one tile of
``BT`` positions (:data:`.plan.TILE_ROWS`) that one program step holds in a thread's registers.

Design
------
* **Route pairs.** Routes 0 and 2 walk the row-major sequence in opposite directions, routes 1 and 3 the
  column-major one. A program owns one *pair* on a chunk of ``BT`` consecutive positions of its sequence and a block
  of ``BD`` channels, loads each operand tile ``[BT, BD]`` once, and computes both routes on it: the forward route
  scans the tile top-down, the reverse route bottom-up, and their outputs add in registers.
* **Channels across lanes, the sequence inside a thread.** A tile's channel axis spans the warp's lanes (``VEC``
  contiguous channels per thread, so every load and store is one vector per position), its ``BT`` positions all live
  in the same thread: ``tl.associative_scan`` along the positions is then a sequential recurrence in registers (no
  shuffles, no shared memory), and folding a carried state into the first/last row or reading the chunk-end state
  are register picks. Every position of every route is a contiguous vector of channels, whatever the route's
  direction.
* **Segments walked sequentially, a carry pass between them.** Each pair's sequence is cut into segments of ``cpp``
  chunks, one program per (segment, channel block, image), as many as fill the device (one segment per sequence when
  the batch alone fills it; a batch of one or two detection images, L ~ 67,000, gets as many programs as batch 128
  at 224^2). A program walks its chunks in order and carries the state of the route that runs its way in registers
  from chunk to chunk, so that route needs no stored chunk states at all. The other route needs the state entering
  each chunk from the far side: a summary launch walks the segment the other way first and stores it (from a zero
  start at the segment's end). With several segments, the summary launch also writes each segment's summary (decay
  sum, end state from a zero start) for both routes, a carry kernel turns them into segment entry states
  (sequentially over segments, ``CB`` per memory round trip), and the main launch starts the carried route from its
  segment entry and makes every stored entry exact with one multiply-add: E += exp(A * sum(delta below the chunk)) *
  E_segment. The decay sum below a chunk is the segment's total minus the running sum above it, both compensated
  (:func:`.ss2d_shared._sum_add`), so no per-chunk array of decay sums is needed. The forward saves only the reverse
  routes' chunk entries and all routes' segment entries.
* **Carried values** (:func:`.ss2d_shared._carried`) live in registers for N = 1; for larger N (N registers per
  channel and value would spill) in a per-program scratch row, read and written state by state.
* **The merge.** The row-pair programs write y; the column-pair launch, ordered after it, adds its two routes to y.
  No atomics, and the sum order is fixed: y = ((D x + y_0 + y_2) + y_1 + y_3) bit for bit on every run.
* **Backward.** The same structure for the adjoint ``q = a * dL/dh`` (which obeys the same kind of recurrence as the
  state, so the decay sums serve its carry): a summary launch walks each segment bottom-up for the forward route's
  adjoint entries (and, with several segments, both routes' adjoint segment summaries), a carry over segments, then
  one main kernel per pair that walks top-down carrying the forward route's state (from the forward's segment
  entries: a backward segment is a whole number of forward segments) and the reverse route's adjoint, reads the
  reverse route's saved state entries and the forward route's adjoint entries, and forms every gradient in
  registers. For N > 1 the forward route's adjoint entries are stored once per *superchunk* of K chunks
  (:func:`.plan.superchunk`; N times larger per chunk, they would be 1.4x the op's inputs for vanilla stage 1) and
  the main kernel recomputes the K entries at the top of each superchunk into a per-program scratch
  (:func:`.ss2d_backward._adjoint_entries`). The main kernel loops over the channel blocks itself, so dB and dC are
  summed over channels inside the program (no workspace that grows with channel blocks x N x L); dx of the column
  pair is added to the row pair's. dA, dD and d(delta_bias) are summed per program and reduced on the host in a
  fixed order. Deterministic, no atomics.
* **Numerics.** Everything is upcast to fp32 at load; states and sums are fp32. softplus is max(x, 0) + log(1 +
  e^-|x|), exact to fp32 round-off without ``log1p`` (absent from the interpreter): a series below e^-|x| = 1/16,
  log2 above; above 20 it rounds to x, torch's identity there, with no select. The adjoint scan uses the shifted
  decay a(l+1) without loading the next position: its combine carries the segment's first decay
  (:func:`.ss2d_shared._adjoint_combine`). Padded positions (past L, or channels past D) are the identity step: zero
  inputs, and delta loaded as -inf, which softplus maps to Δ = 0 exactly (and its slope exp(x - softplus(x)) to 0),
  so no per-element select is needed (without softplus, Δ is zeroed by a select).
"""
from .plan import INTERPRET
from .selective_scan import scan_bwd, scan_fwd, scan_saved_like
from .ss2d_launch import ss2d_bwd, ss2d_fwd, ss2d_saved_like

__all__ = ['INTERPRET', 'scan_fwd', 'scan_bwd', 'scan_saved_like', 'ss2d_fwd', 'ss2d_bwd', 'ss2d_saved_like']
