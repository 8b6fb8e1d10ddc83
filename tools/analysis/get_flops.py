"""Parameters and FLOPs of VMamba variants, baselines or any classification/detection/segmentation config.

FLOPs are fvcore multiply-accumulates with the selective scan counted as the official repo counts it
(9*B*L*D*N + B*D*L per scan; see vmamba/analysis/flops.py). Default input sizes are those of the published
numbers: 224x224 (ImageNet), 1280x800 (COCO), 512x2048 (ADE20K).

    python tools/analysis/get_flops.py --all                                   # the paper's ImageNet table
    python tools/analysis/get_flops.py tiny swin_t resnet50 --shape 512 512
    python tools/analysis/get_flops.py configs/detection/maskrcnn_vmamba_tiny_1x.py
    python tools/analysis/get_flops.py configs/segmentation/upernet_vmamba_*_512x512.py --out seg_flops.json
    python tools/analysis/get_flops.py tiny --by-module 2                      # per-module breakdown
"""
import argparse
import json
import sys

import vmamba  # noqa: F401  (first: it quiets setuptools' pkg_resources notice before mmengine is imported)
from mmengine.config import DictAction

from vmamba.analysis import DEFAULT_SHAPES, SpecError, build_subject
from vmamba.analysis.reference import published
from vmamba.models import ARCH_SETTINGS

#: ``--all``: every published variant, then the baselines the paper compares with.
ALL_MODELS = list(ARCH_SETTINGS) + ['swin_t', 'resnet50']

# Custom ops that carry no multiply-adds by the fvcore convention (mmdet's own count leaves them out too).
_ZERO_COST_OPS = {'prim::PythonOp.NMSop', 'prim::PythonOp.RoIAlignFunction'}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('models', nargs='*', help='variant names, baseline names or config files')
    parser.add_argument('--all', action='store_true', help='every VMamba variant plus Swin-T and ResNet-50')
    parser.add_argument('--shape', type=int, nargs='+', metavar='N',
                        help='input H W (or one size for a square); default: the task\'s published size')
    parser.add_argument('--by-module', type=int, default=0, metavar='DEPTH',
                        help='also print FLOPs per module down to this depth')
    parser.add_argument('--out', help='write the rows as JSON to this file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys (key=value)')
    args = parser.parse_args(argv)
    if not args.models and not args.all:
        parser.error('give at least one model (variant, baseline or config), or --all')
    if args.shape is not None and len(args.shape) not in (1, 2):
        parser.error('--shape takes H W or a single size')
    return args


def count(spec, shape=None, cfg_options=None):
    """One table row (a dict) for ``spec`` at ``shape`` (H, W) or the task's default size."""
    subject = build_subject(spec, cfg_options=cfg_options)
    height, width = shape or DEFAULT_SHAPES[subject.task]
    height, width = subject.fit_shape(height, width)
    result = subject.flops(height, width)
    at_published_size = (height, width) == DEFAULT_SHAPES[subject.task]
    ref = published(subject.task, subject.arch or subject.name) if at_published_size else None
    row = dict(model=subject.name, arch=subject.arch, task=subject.task, height=height, width=width,
               params=result.params, flops=result.flops,
               published_mparams=ref and ref.get('mparams'), published_gflops=ref and ref.get('gflops'))
    row['delta_pct'] = (100.0 * (result.gflops / ref['gflops'] - 1.0)) if ref else None
    custom = {op: n for op, n in result.uncounted.items()
              if op.startswith('prim::PythonOp') and op not in _ZERO_COST_OPS}
    row['uncounted_custom_ops'] = custom
    return row, result


def format_table(rows):
    """The rows as a Markdown table (paste-able into docs)."""
    lines = ['| model | task | input | params (M) | FLOPs (G) | published params (M) | published FLOPs (G) '
             '| Δ FLOPs |',
             '|---|---|---|---:|---:|---:|---:|---:|']
    for r in rows:
        name = r['model'] if r['arch'] in (None, r['model']) else f'{r["model"]} ({r["arch"]})'
        pub_p = f'{r["published_mparams"]:g}' if r['published_mparams'] else '–'
        pub_f = f'{r["published_gflops"]:g}' if r['published_gflops'] else '–'
        delta = f'{r["delta_pct"]:+.2f} %' if r['delta_pct'] is not None else '–'
        lines.append(f'| {name} | {r["task"]} | {r["height"]}×{r["width"]} | {r["params"] / 1e6:.2f} | '
                     f'{r["flops"] / 1e9:.2f} | {pub_p} | {pub_f} | {delta} |')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    shape = None
    if args.shape:
        shape = (args.shape[0], args.shape[-1])
    specs = (ALL_MODELS if args.all else []) + args.models
    rows = []
    for spec in specs:
        try:
            row, result = count(spec, shape, args.cfg_options)
        except SpecError as err:
            sys.exit(f'error: {err}')
        rows.append(row)
        print(f'{row["model"]}: {row["params"] / 1e6:.2f} M params, {row["flops"] / 1e9:.3f} GFLOPs '
              f'at {row["height"]}x{row["width"]}', flush=True)
        if row['uncounted_custom_ops']:
            print(f'  warning: custom ops without a FLOP handle (counted as 0): {row["uncounted_custom_ops"]}')
        if args.by_module:
            for name, flops in result.by_module.items():
                if name and name.count('.') < args.by_module:
                    print(f'  {name:<40s} {flops / 1e9:10.3f} G')
    print()
    print(format_table(rows))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(rows, f, indent=1)
        print(f'\nwrote {args.out}')
    return rows


if __name__ == '__main__':
    main()
