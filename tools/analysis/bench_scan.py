"""Benchmark the selective-scan op on the VMamba stage shapes (a script that prints numbers, not a test).

For each stage of the chosen arch (224x224 input, token grid 56/28/14/7) and each d_state and input dtype it times
forward and forward+backward of

* ``fused``:   :func:`vmamba.ops.ss2d_selective_scan` (what the model calls),
* ``unfused``: cross_scan -> :func:`vmamba.ops.selective_scan` -> cross_merge, delta/B/C already routed (the
  official VMamba pipeline),
* ``ref``:     the sequential reference (:func:`vmamba.ops.ss2d_scan_ref`), where feasible,

and prints ms, effective GB/s (bytes of the *fused* op's ideal traffic: every input read once, every output written
once, see :func:`ideal_bytes`), the % of the device's HBM peak (from :data:`HBM_PEAK_GBS` by device name, else
measured by a device-to-device copy) and the unfused chain's time over the fused op's. On CPU it prints the
speed-up of the fast path over the reference instead of a % of peak. ``--json`` writes the rows.

Examples::

    python tools/analysis/bench_scan.py                                   # GPU: batch 128, all stages
    python tools/analysis/bench_scan.py --device cpu --batch 1 --stages 1 --d-states 1   # CPU speed-up
"""
import argparse
import statistics
import time

import torch

from vmamba.analysis import scan_traffic
from vmamba.models.variants import resolve_arch
from vmamba.ops import cross_merge, cross_scan, resolve_backend, selective_scan, ss2d_scan_ref, ss2d_selective_scan
from vmamba.ops.routes import route_maps

#: HBM peak bandwidth (GB/s) by substring of ``torch.cuda.get_device_name()``; override with --peak-gbs.
#: The first key found in the name wins, so specific names come before their prefixes.
HBM_PEAK_GBS = {'B200': 8000, 'H200': 4800, 'H100 PCIe': 2000, 'H100 NVL': 3900, 'GH200': 4000, 'H100': 3350,
                'A100-SXM4-80GB': 2039, 'A100 80GB PCIe': 1935, 'A100': 1555, 'L40S': 864, 'L40': 864, 'L4': 300,
                'RTX 5090': 1792, 'RTX 5080': 960, 'RTX 4090': 1008, 'RTX 4080': 717, 'RTX 3090': 936,
                'A10G': 600, 'A10': 600, 'T4': 320, 'V100': 900}
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def measured_peak_gbs(device, mib=1024):
    """Device-to-device copy bandwidth (bytes read + written per second, GB/s), best of 5: the peak's stand-in
    for a GPU missing from :data:`HBM_PEAK_GBS`."""
    a = torch.empty(mib * 2 ** 20, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    ms = min(bench(lambda: b.copy_(a), device, 2, 1) for _ in range(5))
    return 2 * a.numel() / ms / 1e6


def stage_shapes(arch, image_size=224, patch=4):
    """(stage, D, H, W) per stage: D = ssm_ratio * dims * 2**i channels on a (image/patch/2**i)^2 grid."""
    _, cfg = resolve_arch(arch)
    out = []
    for i in range(len(cfg['depths'])):
        side = max(1, image_size // patch // 2 ** i)
        out.append((i + 1, int(cfg['ssm_ratio'] * cfg['dims'] * 2 ** i), side, side))
    return out


def make_inputs(batch, dim, d_state, H, W, dtype, device):
    """Fused-op inputs, channels-last as SS2D passes them: x (b, H, W, D), delta (b, H, W, 4, D), B/C (b, H, W, 4, N)."""
    g = torch.Generator(device='cpu').manual_seed(0)

    def rnd(*shape, scale=1.0, shift=0.0, dt=dtype):
        return (torch.randn(*shape, generator=g) * scale + shift).to(device=device, dtype=dt)

    x = rnd(batch, H, W, dim)
    delta = rnd(batch, H, W, 4, dim, scale=0.5, shift=-1.0)
    B, C = rnd(batch, H, W, 4, d_state), rnd(batch, H, W, 4, d_state)
    A = -torch.exp(rnd(4 * dim, d_state, scale=0.5, dt=torch.float32))
    D, bias = rnd(4 * dim, dt=torch.float32), rnd(4 * dim, scale=0.5, shift=-2.0, dt=torch.float32)
    return [x, delta, A, B, C, D, bias]


def ideal_bytes(batch, dim, d_state, H, W, in_size, backward):
    """Minimal HBM traffic of the fused op (forward, or forward + backward): see vmamba.analysis.scan_traffic."""
    fwd = scan_traffic.ideal_bytes(batch, H, W, dim, d_state, in_size, 'forward')
    return fwd + (scan_traffic.ideal_bytes(batch, H, W, dim, d_state, in_size, 'backward') if backward else 0)


def timer(device):
    if device.type == 'cuda':
        def measure(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)
    else:
        def measure(fn):
            t = time.perf_counter()
            fn()
            return (time.perf_counter() - t) * 1e3
    return measure


def bench(fn, device, warmup, repeats):
    """Median milliseconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    measure = timer(device)
    for _ in range(warmup):
        fn()
    return statistics.median(measure(fn) for _ in range(repeats))


def variants(inputs, backend):
    """name -> (forward fn, forward+backward fn) for the fused op, the unfused chain and the reference."""
    x, delta, A, B, C, D, bias = inputs
    H, W = x.shape[1:3]
    leaves = [t.detach().requires_grad_() for t in (x, delta, B, C)]
    # The unfused chain starts from channel-first routed delta/B/C, as the official model produces them.
    first = lambda t: t.permute(0, 3, 4, 1, 2)  # noqa: E731
    x_first = x.permute(0, 3, 1, 2).contiguous().detach().requires_grad_()
    routed = [route_maps(first(delta)).flatten(1, 2).detach().requires_grad_(),
              route_maps(first(B)).detach().requires_grad_(), route_maps(first(C)).detach().requires_grad_()]

    def fused(grad):
        xx, dl, BB, CC = leaves if grad else (x, delta, B, C)
        y = ss2d_selective_scan(xx, dl, A, BB, CC, D, bias, backend=backend)
        if grad:
            y.backward(torch.ones_like(y))

    def unfused(grad):
        xx = x_first
        dl, BB, CC = routed
        ys = selective_scan(cross_scan(xx).flatten(1, 2), dl, A, BB, CC, D, bias, delta_softplus=True,
                            backend=backend)
        y = cross_merge(ys.unflatten(1, (4, -1)), H, W)
        if grad:
            y.backward(torch.ones_like(y))

    def reference(grad):
        xx, dl, BB, CC = leaves if grad else (x, delta, B, C)
        y = ss2d_scan_ref(xx, dl, A, BB, CC, D, bias)
        if grad:
            y.backward(torch.ones_like(y))

    def pair(f):
        def fwd():
            with torch.no_grad():
                f(False)
        return fwd, lambda: f(True)

    return {'fused': pair(fused), 'unfused': pair(unfused), 'ref': pair(reference)}


def print_traffic(args):
    """The kernels' bytes (sector model, no cache credit) against the fused op's ideal, and the backward's
    extra memory, for the compile-fact shapes (vmamba.analysis.compile_facts.SHAPES)."""
    import json

    from vmamba.analysis.compile_facts import SHAPES
    size = {'bf16': 2, 'fp16': 2, 'fp32': 4}[args.traffic_dtype]
    records = scan_traffic.traffic_records(SHAPES, size)
    print(f'memory traffic of the fused SS2D kernels, {args.traffic_dtype} inputs, fp32 y/dy; 32-byte sectors '
          'requested, no cache credit')
    print('| shape | direction | bytes | ideal | ratio | backward extra memory | % of inputs | saved by forward |')
    print('|---|---|---|---|---|---|---|---|')
    for r in records:
        extra = r['extra_memory_bytes']
        print(f'| {r["shape"]} | {r["direction"]} | {r["bytes"] / 1e9:.3f} GB | {r["ideal_bytes"] / 1e9:.3f} GB | '
              f'{scan_traffic.ratio(r):.2f}x | ' + (f'{extra / 1e6:.1f} MB | {100 * extra / r["input_bytes"]:.1f} % | '
                                      if r['direction'] == 'backward' else '- | - | ')
              + f'{r["saved_bytes"] / 1e6:.1f} MB |')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(records, f, indent=1)
        print(f'wrote {args.json}')


def print_roofline(args):
    """Ideal traffic of the fused op per stage, and its time at the HBM peak and at 80 % of it."""
    peak = args.peak_gbs or HBM_PEAK_GBS['H100']
    batch = args.batch or 128
    print(f'roofline at {peak:.0f} GB/s, arch {args.arch}, batch {batch}, 224x224 input')
    print('| stage | D | HxW | N | inputs | fwd bytes | fwd @ peak | fwd @ 80 % | fwd+bwd bytes | fwd+bwd @ peak |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for d_state in args.d_states:
        for stage, dim, H, W in stage_shapes(args.arch):
            if stage not in args.stages:
                continue
            for dtype_name in args.dtypes:
                size = torch.finfo(DTYPES[dtype_name]).bits // 8
                f = ideal_bytes(batch, dim, d_state, H, W, size, False)
                fb = ideal_bytes(batch, dim, d_state, H, W, size, True)
                print(f'| {stage} | {dim} | {H}x{W} | {d_state} | {dtype_name} | {f / 1e9:.2f} GB | '
                      f'{f / peak / 1e6:.3f} ms | {f / (0.8 * peak) / 1e6:.3f} ms | {fb / 1e9:.2f} GB | '
                      f'{fb / peak / 1e6:.3f} ms |')


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--arch', default='tiny', help='variant whose stage widths are used (default: tiny)')
    parser.add_argument('--batch', type=int, default=None, help='default: 128 on CUDA, 1 on CPU')
    parser.add_argument('--stages', type=int, nargs='+', default=[1, 2, 3, 4])
    parser.add_argument('--d-states', type=int, nargs='+', default=[1, 16])
    parser.add_argument('--dtypes', nargs='+', default=['fp32', 'bf16'], choices=sorted(DTYPES),
                        help='input dtype; the output is fp32 either way (VMamba "oflex")')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--backend', default=None,
                        help="'torch', 'triton' or 'numba' (default: by device, as resolve_backend: triton on CUDA, "
                             "numba on CPU when installed, else torch)")
    parser.add_argument('--no-ref', action='store_true', help='skip the (slow) sequential reference')
    parser.add_argument('--ref-max-elems', type=float, default=2e8,
                        help='skip the reference above this many batch*4D*L*N elements (it is a Python loop)')
    parser.add_argument('--warmup', type=int, default=None)
    parser.add_argument('--repeats', type=int, default=None)
    parser.add_argument('--peak-gbs', type=float, default=None, help='HBM peak in GB/s (default: from a table)')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch default)')
    parser.add_argument('--forward-only', action='store_true', help='skip forward+backward timing')
    parser.add_argument('--roofline', action='store_true',
                        help='print the ideal bytes and the time they take at --peak-gbs (no timing, no device)')
    parser.add_argument('--traffic', action='store_true',
                        help='print the bytes the fused kernels move (access-pattern model) vs the ideal, and the '
                             "backward's extra memory (no timing, no device)")
    parser.add_argument('--traffic-dtype', default='bf16', choices=sorted(DTYPES))
    parser.add_argument('--json', help='also write the records (the timing rows, or with --traffic the traffic) '
                                       'to this file')
    parser.add_argument('--image-size', type=int, default=224, help='input size the stage shapes come from')
    args = parser.parse_args()
    if args.traffic:
        print_traffic(args)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.roofline:
        print_roofline(args)
        return

    device = torch.device(args.device)
    cuda = device.type == 'cuda'
    batch = args.batch or (128 if cuda else 1)
    warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    repeats = args.repeats if args.repeats is not None else (10 if cuda else 3)
    peak = args.peak_gbs
    name = torch.cuda.get_device_name(device) if cuda else f'CPU ({torch.get_num_threads()} threads)'
    peak_source = 'given'
    if cuda and peak is None:
        peak, peak_source = next((v for k, v in HBM_PEAK_GBS.items() if k in name), None), 'table'
        if peak is None:
            peak, peak_source = measured_peak_gbs(device), 'measured copy'
    backend = args.backend or resolve_backend(None, device)
    print(f'device: {name}; backend: {backend}; arch: {args.arch}; batch {batch}; '
          f'{args.image_size}x{args.image_size} input' + (f'; HBM peak {peak:.0f} GB/s ({peak_source})' if peak else ''))
    print('GB/s = ideal bytes of the fused op / time (every input read once, every output written once).')
    header = f'{"stage":>5} {"D":>5} {"HxW":>7} {"N":>3} {"dtype":>5} {"variant":>8} | ' \
             f'{"fwd ms":>9} {"GB/s":>7} {"%peak":>6} | {"fwd+bwd ms":>10} {"GB/s":>7} {"%peak":>6}'
    print(header)
    print('-' * len(header))
    shapes = [s for s in stage_shapes(args.arch, args.image_size) if s[0] in args.stages]
    rows = []
    for stage, dim, H, W in shapes:
        for d_state in args.d_states:
            for dtype_name in args.dtypes:
                dtype = DTYPES[dtype_name]
                inputs = make_inputs(batch, dim, d_state, H, W, dtype, device)
                size = torch.finfo(dtype).bits // 8
                results = {}
                for variant, (fwd, fwdbwd) in variants(inputs, backend).items():
                    if variant == 'ref' and (args.no_ref or batch * 4 * dim * H * W * d_state > args.ref_max_elems):
                        continue
                    reps = 1 if variant == 'ref' else repeats
                    warm = min(warmup, 1) if variant == 'ref' else warmup
                    t_f = bench(fwd, device, warm, reps)
                    t_fb = float('nan') if args.forward_only else bench(fwdbwd, device, warm, reps)
                    results[variant] = (t_f, t_fb)
                    gb = [ideal_bytes(batch, dim, d_state, H, W, size, b) / 1e9 for b in (False, True)]
                    rows.append(dict(stage=stage, dim=dim, H=H, W=W, d_state=d_state, dtype=dtype_name,
                                     variant=variant, fwd_ms=t_f, fwdbwd_ms=t_fb, fwd_gbs=gb[0] / t_f * 1e3,
                                     fwdbwd_gbs=gb[1] / t_fb * 1e3,
                                     fwd_pct_peak=100 * gb[0] / t_f * 1e3 / peak if peak else None,
                                     fwdbwd_pct_peak=100 * gb[1] / t_fb * 1e3 / peak if peak else None))
                    cells = []
                    for t, backward in ((t_f, False), (t_fb, True)):
                        gbs = ideal_bytes(batch, dim, d_state, H, W, size, backward) / t / 1e6
                        pct = f'{100 * gbs / peak:5.1f}%' if peak else '     -'
                        cells.append(f'{t:9.3f} {gbs:7.3g} {pct:>6}')
                    print(f'{stage:>5} {dim:>5} {f"{H}x{W}":>7} {d_state:>3} {dtype_name:>5} {variant:>8} | '
                          f'{cells[0]} |  {cells[1]}')
                if 'unfused' in results:
                    (f_fu, fb_fu), (f_un, fb_un) = results['fused'], results['unfused']
                    print(f'{"":>37} unfused chain / fused op: forward {f_un / f_fu:.2f}x, '
                          f'forward+backward {fb_un / fb_fu:.2f}x')
                if 'ref' in results:
                    f_ref, fb_ref = results['ref']
                    f_fast, fb_fast = results['fused']
                    print(f'{"":>37} speed-up of fused over ref: forward {f_ref / f_fast:.1f}x, '
                          f'forward+backward {fb_ref / fb_fast:.1f}x')
    if args.json:
        import json
        with open(args.json, 'w') as f:
            json.dump(dict(device=name, backend=backend, batch=batch, image_size=args.image_size, peak_gbs=peak,
                           peak_source=peak_source if peak else None, rows=rows), f, indent=1)
        print(f'wrote {args.json}')


if __name__ == '__main__':
    main()
