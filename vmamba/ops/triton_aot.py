"""Compile the Triton scan kernels ahead of time for a CUDA architecture, on a machine without a GPU.

The interpreter (how CI runs the kernels on CPU) checks the maths but not whether the kernels *compile*: types,
layouts and register use only show up in the real pipeline (TTIR -> TTGIR -> LLVM -> PTX -> cubin). Triton can
run that pipeline for an explicit target without a device, so this module does, for the block configurations
:func:`.triton_scan.block_config` picks on representative shapes, and reports ptxas' registers and spills.

    python -m vmamba.ops.triton_aot --arch 90      # sm_90 (H100); --arch 80 for A100; --quick for two shapes

Must run without ``TRITON_INTERPRET=1`` (interpreted kernels cannot be compiled); exits non-zero on any failure.
"""
import argparse
import os
import subprocess
import sys

#: (name, L, d_state, channels per group, rows = batch x channels): VMamba-T stage 1 (N = 1, 16), stage 4,
#: detection at stride 4 and batch 2 (few programs, long L), and the largest supported d_state.
SHAPES = [
    ('stage1_n1', 3136, 1, 96, 128 * 384),
    ('stage1_n16', 3136, 16, 192, 128 * 768),
    ('stage4_n1', 49, 1, 768, 128 * 3072),
    ('detection_n1', 66_600, 1, 96, 2 * 96),
    ('n64', 100, 64, 2, 4),
]

#: kernel name -> (pointer args holding input-dtype data, forward?, fused?)
_KERNELS = {
    '_scan_fwd_kernel': ({'u_ptr', 'dl_ptr', 'B_ptr', 'C_ptr'}, True, False),
    '_scan_bwd_kernel': ({'u_ptr', 'dl_ptr', 'B_ptr', 'C_ptr', 'du_ptr', 'ddl_ptr'}, False, False),
    '_ss2d_fwd_kernel': ({'x_ptr', 'dl_ptr', 'B_ptr', 'C_ptr'}, True, True),
    '_ss2d_bwd_kernel': ({'x_ptr', 'dl_ptr', 'B_ptr', 'C_ptr', 'ddl_ptr'}, False, True),
}


def _ptxas_stats(ptx, arch):
    """(registers, spill bytes) from ``ptxas -v``, or (None, None) when Triton's ptxas is not available."""
    import tempfile

    import triton
    ptxas = os.path.join(os.path.dirname(triton.__file__), 'backends', 'nvidia', 'bin', 'ptxas')
    if not os.path.exists(ptxas):
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


def compile_kernels(arch=90, shapes=SHAPES, dtype='bf16'):
    """Compile every kernel (and both fused-op modes) for each shape. Returns a list of result dicts."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from . import triton_scan
    if triton_scan.INTERPRET:
        raise RuntimeError('triton_aot needs compiled kernels: unset TRITON_INTERPRET and run in a fresh process.')
    results = []
    for name, length, d_state, group_channels, rows in shapes:
        BN, BL, bd_fwd, bd_bwd, warps_bwd = triton_scan.block_config(length, d_state, group_channels, rows, 528)
        for kernel_name, (half_ptrs, forward, fused) in _KERNELS.items():
            kernel = getattr(triton_scan, kernel_name)
            for split in ((False, True) if fused else (None,)):
                consts = dict(HAS_D=True, HAS_BIAS=True, SOFTPLUS=True, BN=BN, BL=BL,
                              BD=bd_fwd if forward else bd_bwd)
                if split is not None:
                    consts['SPLIT'] = split
                signature = {a: 'constexpr' if a in consts else
                             (f'*{dtype}' if a in half_ptrs else '*fp32') if a.endswith('_ptr') else 'i32'
                             for a in kernel.arg_names}
                num_warps = 4 if forward else warps_bwd
                compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=consts),
                                          target=GPUTarget('cuda', arch, 32), options=dict(num_warps=num_warps))
                regs, spills = _ptxas_stats(compiled.asm['ptx'], arch)
                results.append(dict(shape=name, kernel=kernel_name + ('[split]' if split else ''),
                                    BD=consts['BD'], BN=BN, BL=BL, num_warps=num_warps, registers=regs,
                                    spill_bytes=spills))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--arch', type=int, default=90, help='compute capability x10: 80 (A100), 90 (H100)')
    parser.add_argument('--dtype', default='bf16', choices=['bf16', 'fp16', 'fp32'])
    parser.add_argument('--quick', action='store_true', help='only the first two shapes')
    args = parser.parse_args(argv)
    shapes = SHAPES[:2] if args.quick else SHAPES
    print(f'{"shape":>13} {"kernel":>24} {"BD":>3} {"BN":>3} {"BL":>4} {"warps":>5} {"regs":>5} {"spill B":>7}')
    for r in compile_kernels(args.arch, shapes, args.dtype):
        print(f'{r["shape"]:>13} {r["kernel"]:>24} {r["BD"]:>3} {r["BN"]:>3} {r["BL"]:>4} {r["num_warps"]:>5} '
              f'{r["registers"]!s:>5} {r["spill_bytes"]!s:>7}')
    print(f'all kernels compiled for sm_{args.arch} ({args.dtype} inputs)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
