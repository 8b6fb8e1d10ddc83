"""Compile the Triton scan kernels ahead of time for a CUDA architecture, on a machine without a GPU, and report
what they compile to.

The interpreter (how CI runs the kernels on CPU) checks the maths but not the machine code: registers, spills,
vector widths and instruction counts only exist after Triton's real pipeline (TTIR -> TTGIR -> LLVM -> PTX ->
cubin), which runs for an explicit target without a device. This module compiles every kernel of the fused
SS2D op (and the plain op) for the shapes below, with the launch geometry of
:mod:`vmamba.ops.triton_backend.plan` for an H100's SMs, specialised as the runtime JIT would (16-byte aligned
pointers, integer arguments divisible by 16 marked so, arguments equal to 1 made constants), and prints per
kernel and shape:

* ``registers`` / ``spill_bytes``: from ``ptxas -v``;
* ``vector_loads`` / ``scalar_loads``: ``ld.global`` instructions in the PTX with / without ``.v2``/``.v4``;
* ``batch_offset_64bit``: the image index is widened to 64 bits before it scales a stride (see
  :func:`batch_offset_64bit`; the tool fails otherwise);
* ``instr_per_element``: SASS thread-instructions of one iteration of the kernel's chunk loop (its walk over
  tiles of positions; over spans for the plain op), divided by the route-elements (position x channel x route)
  a thread handles in it. For d_state N > 1 the loop over states counts N times. The carry kernel counts per
  (chunk, channel, state).

    python -m vmamba.analysis.compile_facts --arch 90                 # sm_90 (H100/H200); --arch 80 for A100
    python -m vmamba.analysis.compile_facts --arch 90 --json facts.json --shapes s1l8_stage1 vanilla_stage1

Budgets (printed with the table): to keep the fused op bandwidth-bound at 80 % of an H100's HBM peak
(3.35 TB/s; 132 SMs x 4 warp-instructions per cycle x 1.98 GHz = 33.4 T thread-instructions/s), a kernel may
spend per route-element at most ``33.4e12 * bytes_per_route_element / (0.8 * 3.35e12)`` instructions: with the
ideal bytes of the fused op (bf16 in, fp32 y and dy) that is 43 forward / 75 backward for N = 1 (VMamba-T), and
48 / 83 for N = 16 (vanilla, whose B/C add 4 * 2 * 16 * 2 bytes per position); the round budgets are 40 / 75
for N = 1 (:data:`BUDGET`, which the compile test reads).

Must run without ``TRITON_INTERPRET=1`` (interpreted kernels cannot be compiled); exits non-zero on failure.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

#: name -> (batch, H, W, D, N): VMamba-T[s1l8] stages 1-4 and the vanilla design's stage 1 at batch 128
#: (224^2 input), and a Mask R-CNN image pair at stride 4 (800 x 1344 -> 200 x 336, L = 67,200).
SHAPES = {
    's1l8_stage1': (128, 56, 56, 96, 1),
    's1l8_stage2': (128, 28, 28, 192, 1),
    's1l8_stage3': (128, 14, 14, 384, 1),
    's1l8_stage4': (128, 7, 7, 768, 1),
    'vanilla_stage1': (128, 56, 56, 192, 16),
    'det_b2': (2, 200, 336, 96, 1),
}

#: Instruction budgets per route-element (see the module docstring), by (direction, N > 1).
BUDGET = {('forward', False): 40, ('backward', False): 75, ('forward', True): 48, ('backward', True): 83}

#: The carry kernel has no loop over states; it and the plain op (not what the model calls) have no budget.
_NO_STATE_LOOP = {'carry', 'plain_fwd', 'plain_bwd'}
_NO_BUDGET = _NO_STATE_LOOP
_HALF_ARGS = {'x_ptr', 'dl_ptr', 'B_ptr', 'C_ptr', 'dx_ptr', 'ddl_ptr', 'u_ptr', 'du_ptr'}
_BIN = None


def _bin(tool):
    import triton
    return os.path.join(os.path.dirname(triton.__file__), 'backends', 'nvidia', 'bin', tool)


def _ptxas(arch):
    """The ptxas Triton itself compiles ``arch`` with: from sm_100 on, newer Triton ships a second ptxas
    (``ptxas-blackwell``, a later CUDA) because its default one does not know Blackwell's archs."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas
        return get_ptxas(arch).path
    except (ImportError, AttributeError):  # a Triton with one ptxas
        blackwell = _bin('ptxas-blackwell')
        return blackwell if arch >= 100 and os.path.exists(blackwell) else _bin('ptxas')


def _ptxas_stats(ptx, arch):
    """(registers, spill bytes) from ``ptxas -v``, or (None, None) when Triton's ptxas is not available."""
    ptxas = _ptxas(arch)
    if not ptxas or not os.path.exists(ptxas):
        return None, None
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, 'k.ptx')
        with open(src, 'w') as f:
            f.write(ptx)
        suffix = 'a' if arch >= 90 else ''
        out = subprocess.run([ptxas, '-v', f'-arch=sm_{arch}{suffix}', src, '-o', os.path.join(tmp, 'k.cubin')],
                             capture_output=True, text=True).stderr
    regs = spills = None
    for line in out.splitlines():
        if 'registers' in line:
            regs = int(line.split('Used')[1].split('registers')[0])
        if 'spill stores' in line:
            spills = int(line.split('bytes spill stores')[0].split(',')[-1])
    return regs, spills


def _sass(cubin):
    """[(address, opcode)] of the kernel's SASS (cuobjdump ships inside triton)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'k.cubin')
        with open(path, 'wb') as f:
            f.write(cubin)
        text = subprocess.run([_bin('cuobjdump'), '-sass', path], capture_output=True, text=True).stdout
    out = []
    for line in text.splitlines():
        m = re.match(r'\s+/\*([0-9a-f]{4,})\*/\s+(.*?);', line)
        if m:
            out.append((int(m.group(1), 16), m.group(2).strip()))
    return out


def _loops(sass):
    """(start, end) address ranges of the loops: backward branches."""
    loops = []
    for addr, ins in sass:
        m = re.match(r'(@!?U?P\w+\s+)?BRA(?:\.\w+)*\s+(?:\S+\s+)?(0x[0-9a-f]+)', ins)  # BRA.U on sm_100+
        if m and int(m.group(2), 16) <= addr:
            loops.append((int(m.group(2), 16), addr))
    return loops


def _count(sass, start, end):
    return sum(1 for a, _ in sass if start <= a <= end)


def chunk_loop_instructions(sass, n_states, recompute=0.0):
    """SASS instructions of one iteration of the chunk loop, every loop nested in it counted by its trip count.

    The chunk loop is the innermost loop that holds global tile loads and contains another loop (the loops over
    states) or, failing that, the innermost loop with global loads. Nested loops without loops inside are state
    loops, counted n_states times. With ``recompute`` > 0 (the backward's superchunk walk, RECOMPUTE) the
    innermost such loop is that walk, nested in the chunk loop: it is counted ``recompute`` times per chunk
    iteration (the fraction of chunks it walks again), its own state loop n_states times.
    """
    loops = _loops(sass)
    loads = [a for a, ins in sass if re.search(r'\bLDG\b', ins)]

    def has_loads(lp):
        return sum(lp[0] <= a <= lp[1] for a in loads) >= 2

    inner = lambda lp: [q for q in loops if q != lp and lp[0] <= q[0] and q[1] <= lp[1]]  # noqa: E731
    size = lambda lp: lp[1] - lp[0]  # noqa: E731

    def per_iteration(lp):
        nested = inner(lp)
        children = [q for q in nested if not any(q in inner(r) for r in nested)]
        total = _count(sass, *lp) - sum(_count(sass, *q) for q in children)
        for q in children:
            total += (recompute if has_loads(q) and inner(q) else n_states) * per_iteration(q)
        return total

    candidates = [lp for lp in loops if has_loads(lp) and inner(lp)]
    if candidates:
        outer = min(candidates, key=size)
        if recompute:
            outer = min((lp for lp in candidates if lp != outer and outer in inner(lp)), key=size)
        return per_iteration(outer)
    plain = [lp for lp in loops if has_loads(lp)]
    if not plain:
        return None
    return _count(sass, *min(plain, key=size))


#: The grid axis that indexes the image, per kernel (the others: z).
_BATCH_AXIS = {'bwd_main': 'y', 'plain_fwd': 'y', 'plain_bwd': 'y'}


def batch_offset_64bit(ptx, axis):
    """Whether the image index (``%ctaid.<axis>``) enters the address arithmetic only widened to 64 bits
    (``cvt.u64``, ``mul.wide``/``mad.wide``), so that image b's offset b * stride cannot wrap when a batch holds
    more than 2^31 elements. Offsets inside one image stay 32-bit: the dispatcher refuses larger images.
    None when the PTX does not read that axis."""
    regs = re.findall(rf'mov\.u32\s+(%r\d+),\s*%ctaid\.{axis};', ptx)
    if not regs:
        return None
    for reg in regs:
        uses = [line for line in ptx.splitlines() if re.search(rf'{reg}\b', line) and '%ctaid' not in line]
        if not uses or not all(re.match(r'\s*(cvt\.[us]64\.[us]32|mul\.wide\.[us]32|mad\.wide\.[us]32)\s', u)
                               for u in uses):
            return False
    return True


def _specialise(kernel, consts, ints, dtype):
    """Signature and attributes as the JIT specialises a call: aligned pointers, ints % 16, ints == 1."""
    signature, attrs = {}, {}
    consts = dict(consts)
    for i, arg in enumerate(kernel.arg_names):
        if arg in consts:
            signature[arg] = 'constexpr'
        elif arg.endswith('_ptr'):
            signature[arg] = f'*{dtype}' if arg in _HALF_ARGS else '*fp32'
            attrs[(i,)] = [['tt.divisibility', 16]]
        else:
            value = ints[arg]
            if value == 1:
                consts[arg] = 1
                signature[arg] = 'constexpr'
            else:
                signature[arg] = 'i32'
                if value % 16 == 0:
                    attrs[(i,)] = [['tt.divisibility', 16]]
    return signature, attrs, consts


def _fused_launches(batch, H, W, D, N):
    """(label, kernel, constexprs, integer args, num_warps, route-elements per thread per chunk iteration,
    direction) for every launch of the fused op's forward and backward, as ss2d_fwd/ss2d_bwd make them."""
    import torch

    from vmamba.ops.triton_backend import plan
    from vmamba.ops.triton_backend.ss2d_backward import _bwd_kernel, _bwd_summary_kernel
    from vmamba.ops.triton_backend.ss2d_forward import _fwd_kernel, _fwd_summary_kernel
    from vmamba.ops.triton_backend.ss2d_shared import _carry_kernel
    # the launch plan ss2d_fwd/ss2d_bwd use
    _, _, p = plan.meta_plan(batch, H, W, D, N, torch.bfloat16, plan.REFERENCE_SM_COUNT)
    flags, bflags = p.flags(True, True), p.flags(True, True, backward=True)
    warps, bwarps = flags.pop('num_warps'), bflags.pop('num_warps')
    BT, VEC, bVEC = p.BT, p.VEC, p.bwd_VEC
    L = p.L
    R = -(-D // 16)  # dt_rank of the layer whose inner width is D (ssm_ratio 1: C = D)
    row = 4 * (R + 2 * N)  # B/C are views of the x_proj output (batch, H, W, 4, R + 2N)
    ints = dict(L=L, H=H, W=W, Dm=D, N=N, n_chunks=p.n_chunks, chunks_per_prog=p.cpp, n_segs=p.n_segs,
                n_blocks=p.bwd_blocks, n_fsegs=p.n_segs, fsegs_per_seg=p.fsegs_per_bseg,
                sxb=L * D, sdb=L * D, sdp=D, sdk=batch * L * D, sBb=L * row, sBp=row, sBk=R + 2 * N,
                sBn=1, sCb=L * row, sCp=row, sCk=R + 2 * N, sCn=1, syb=L * D, K=p.K, n_sc=p.n_sc,
                n_qrows=p.n_qrows)
    bsummary_flags = p.summary_flags(True, True)
    bsummary_flags.pop('num_warps')
    flags['TWO_LEVEL'], bflags['TWO_LEVEL'] = p.n_segs > 1, p.n_bsegs > 1
    bints = dict(ints, chunks_per_prog=p.bwd_cpp, n_segs=p.n_bsegs)
    out = []
    for pair in (0, 1):
        out.append((f'fwd_summary[pair{pair}]', _fwd_summary_kernel, dict(PAIR=pair, **flags),
                    ints, warps, BT * VEC * 2, 'forward'))
    carry = p.carry_flags(adjoint=False)
    carry_warps = carry.pop('num_warps')
    out.append(('carry', _carry_kernel, carry, ints, carry_warps, carry['CB'] * carry['BLK'] // (32 * carry_warps),
                'forward'))
    for pair in (0, 1):
        out.append((f'fwd_main[pair{pair}]', _fwd_kernel, dict(PAIR=pair, HAS_D=True, **flags),
                    ints, warps, BT * VEC * 2, 'forward'))
    for pair in (0, 1):
        out.append((f'bwd_summary[pair{pair}]', _bwd_summary_kernel, dict(PAIR=pair, **bsummary_flags),
                    bints, warps, BT * VEC * 2, 'backward'))
    for pair in (0, 1):
        out.append((f'bwd_main[pair{pair}]', _bwd_kernel,
                    dict(PAIR=pair, HAS_D=True, FWD_TWO_LEVEL=p.n_segs > 1, **bflags),
                    bints, bwarps, BT * bVEC * 2, 'backward'))
    return out


def _plain_launches(batch, H, W, D, N):
    """The plain op's two kernels on the same shape, as one route of D channels (official layout)."""
    from vmamba.ops.triton_backend import plan
    from vmamba.ops.triton_backend.selective_scan import _scan_bwd_kernel, _scan_fwd_kernel
    L = H * W
    BN, BL, bd_fwd, bd_bwd, warps_bwd = plan.block_config(
        L, N, D, batch * D, plan.PLAIN_PROGRAMS_PER_SM * plan.REFERENCE_SM_COUNT)
    ints = dict(channels=D, group_channels=D, L=L, N=N, n_spans=-(-L // BL))
    flags = dict(HAS_D=True, HAS_BIAS=True, SOFTPLUS=True, BN=BN, BL=BL)
    per = lambda bd, warps: max(1, bd * BN * BL // (32 * warps))  # noqa: E731  elements per thread per span
    return [('plain_fwd', _scan_fwd_kernel, dict(BD=bd_fwd, **flags), ints, 4, per(bd_fwd, 4), 'forward'),
            ('plain_bwd', _scan_bwd_kernel, dict(BD=bd_bwd, **flags), ints, warps_bwd,
             per(bd_bwd, warps_bwd), 'backward')]


def compile_kernels(arch=90, shapes=None, dtype='bf16'):
    """Compile every fused-op kernel for each shape. Returns a list of records (see the module docstring)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from vmamba.ops.triton_backend import plan
    if plan.INTERPRET:
        raise RuntimeError('compile_facts needs compiled kernels: unset TRITON_INTERPRET and run in a fresh '
                           'process.')
    records = []
    for name in shapes or SHAPES:
        batch, H, W, D, N = SHAPES[name]
        launches = _fused_launches(batch, H, W, D, N) + _plain_launches(batch, H, W, D, N)
        for label, kernel, consts, ints, warps, per_thread, direction in launches:
            signature, attrs, consts = _specialise(kernel, consts, ints, dtype)
            compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=consts, attrs=attrs),
                                      target=GPUTarget('cuda', arch, 32), options=dict(num_warps=warps))
            ptx = compiled.asm['ptx']
            regs, spills = _ptxas_stats(ptx, arch)
            loads = re.findall(r'ld\.global[\w.:]*', ptx)
            vector = sum(1 for ld in loads if re.search(r'\.v[24]\b', ld))
            again = (ints['n_chunks'] - ints['n_qrows']) / ints['n_chunks'] if consts.get('RECOMPUTE') and \
                label.startswith('bwd_main') else 0.0  # the superchunk walk, per chunk
            body = chunk_loop_instructions(_sass(compiled.asm['cubin']), 1 if label in _NO_STATE_LOOP else N, again)
            wide = batch_offset_64bit(ptx, _BATCH_AXIS.get(label.split('[')[0], 'z'))
            records.append(dict(kernel=label, shape=name, d_state=N, direction=direction, num_warps=warps,
                                registers=regs, spill_bytes=spills, vector_loads=vector, batch_offset_64bit=wide,
                                scalar_loads=len(loads) - vector,
                                instr_per_element=None if body is None else round(body / per_thread, 1),
                                budget=None if label in _NO_BUDGET else BUDGET[(direction, N > 1)]))
    return records


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--arch', type=int, default=90,
                        help='compute capability x10: 75 (T4), 80 (A100), 86/89 (RTX 30/40), 90 (H100), 100 (B200), '
                             '120 (RTX 50)')
    parser.add_argument('--dtype', default='bf16', choices=['bf16', 'fp16', 'fp32'])
    parser.add_argument('--shapes', nargs='+', choices=sorted(SHAPES), help='default: all')
    parser.add_argument('--json', help='also write the records to this file')
    args = parser.parse_args(argv)
    records = compile_kernels(args.arch, args.shapes, args.dtype)
    print(f'{"shape":>15} {"kernel":>18} {"N":>3} {"warps":>5} {"regs":>5} {"spill B":>7} {"ld.v2/v4":>8} '
          f'{"ld scalar":>9} {"instr/elem":>10} {"budget":>6} {"b*stride 64-bit":>15}')
    for r in records:
        budget = r['budget'] if r['budget'] is not None else '-'
        print(f'{r["shape"]:>15} {r["kernel"]:>18} {r["d_state"]:>3} {r["num_warps"]:>5} {r["registers"]!s:>5} '
              f'{r["spill_bytes"]!s:>7} {r["vector_loads"]:>8} {r["scalar_loads"]:>9} '
              f'{r["instr_per_element"]!s:>10} {budget!s:>6} {r["batch_offset_64bit"]!s:>15}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(records, f, indent=1)
        print(f'wrote {args.json}')
    print(f'all kernels compiled for sm_{args.arch} ({args.dtype} inputs)')
    narrow = sorted({r['kernel'] for r in records if r['batch_offset_64bit'] is False})
    if narrow:
        print(f'32-bit image offsets in {", ".join(narrow)}: batches over 2^31 elements would wrap')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
