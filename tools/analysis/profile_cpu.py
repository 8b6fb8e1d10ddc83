"""Where VMamba's CPU time goes, by kind of work (scan op, each projection, depthwise conv, norms, MLP, copies,
downsampling, ...), next to Swin-T's (attention, window shifting, ...), from one torch.profiler run per model.

    # VMamba-T and Swin-T inference, one image, one thread
    python tools/analysis/profile_cpu.py tiny --batch 1 --threads 1
    # vanilla-T, training step (forward + loss + backward, fp32), two threads
    python tools/analysis/profile_cpu.py vanilla_tiny --batch 8 --threads 2 --mode train

Rows are exclusive (self) op times summed per kind, in ms per image, so they add up to the profiled step; the
last line is the best un-profiled step time for reference. Attribution rules: vmamba/analysis/cpu_profile.py.
"""
import argparse
import json
import os
import sys

import vmamba  # noqa: F401  (first: it quiets setuptools' pkg_resources notice before mmengine is imported)
import torch

from vmamba.analysis import SWIN_BASELINE, SpecError, build_subject
from vmamba.analysis.cpu_profile import format_breakdowns, format_top_ops, profile_subject


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('models', nargs='+', help="VMamba variant names (tiny, vanilla_tiny, ...) or baselines")
    parser.add_argument('--compare', nargs='+', default=['swin'],
                        help="baselines to add ('swin' = Swin-T of the first model's task; 'none' = no baseline)")
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: torch\'s default)')
    parser.add_argument('--mode', choices=['inference', 'train'], default='inference')
    parser.add_argument('--shape', type=int, nargs='+', metavar='N', default=[224], help='input H [W] (224)')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--iters', type=int, default=3, help='profiled (and, before, un-profiled timed) steps')
    parser.add_argument('--top', type=int, default=10, help='also list the N most expensive ops per model')
    parser.add_argument('--per-kind', action='store_true', help='also list the main ops of every kind')
    parser.add_argument('--json', help='write the breakdowns to this file')
    args = parser.parse_args(argv)
    if len(args.shape) not in (1, 2):
        parser.error('--shape takes H W or a single size')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # numba's OpenMP pool (the compiled CPU scan) would otherwise start with all cores and reset torch's count.
    os.environ.setdefault('NUMBA_NUM_THREADS', str(torch.get_num_threads()))
    height, width = args.shape[0], args.shape[-1]
    specs = list(args.models)
    for name in args.compare:
        if name != 'none':
            name = SWIN_BASELINE['classification'] if name == 'swin' else name
            if name not in specs:
                specs.append(name)
    results = []
    for spec in specs:
        try:
            subject = build_subject(spec, device='cpu')
        except SpecError as err:
            sys.exit(f'error: {err}')
        results.append(profile_subject(subject, args.mode, args.batch, height, width, args.warmup, args.iters))
        print(f'{spec}: {results[-1].wall_ms:.2f} ms/img un-profiled (best of {args.iters}), '
              f'{results[-1].profiled_ms:.2f} profiled', flush=True)
        del subject
    print(f'\n{args.mode}, batch {args.batch}, {height}x{width}, {torch.get_num_threads()} threads, fp32; '
          f'ms per image (self time per kind), {args.iters} profiled steps\n')
    print(format_breakdowns(results))
    if args.top:
        print()
        for r in results:
            print(format_top_ops(r, args.top, per_kind=args.per_kind))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump([r.as_dict() for r in results], f, indent=1)
        print(f'\nwrote {args.json}')
    return results


if __name__ == '__main__':
    main()
