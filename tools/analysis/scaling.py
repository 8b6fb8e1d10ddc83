"""FLOPs, inference throughput and peak memory as the input grows (the paper's Figure 6), for VMamba against
Swin-T and ResNet-50, printed as a table and plotted to one PNG (plus the numbers as JSON).

Models are run as trained at 224 (Swin-T keeps its 7x7 windows and pads), square inputs, inference in
float32 (see vmamba/analysis/timing.py). FLOPs use the official VMamba convention for every model.

    # the paper's sweep on a GPU
    python tools/analysis/scaling.py --device cuda --batch 16 --sizes 224 384 512 640 768 1024
    # FLOPs only (no timing), any machine
    python tools/analysis/scaling.py --no-throughput
    # a small CPU run
    python tools/analysis/scaling.py --device cpu --batch 1 --sizes 224 384 512 --warmup 1 --iters 2
"""
import argparse
import json
import os.path as osp
import sys

import torch

from vmamba.analysis import SpecError, build_subject
from vmamba.analysis.timing import measure_inference


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('models', nargs='*', default=['tiny', 'swin_t', 'resnet50'],
                        help='classification models: variant or baseline names, or classification configs '
                             '(default: tiny swin_t resnet50)')
    parser.add_argument('--sizes', type=int, nargs='+', default=[224, 384, 512, 640, 768, 1024])
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--no-throughput', action='store_true', help='FLOPs only')
    parser.add_argument('--warmup', type=int, help='warm-up iterations (default 10 on GPU, 1 on CPU)')
    parser.add_argument('--iters', type=int, help='timed iterations (default 30 on GPU, 3 on CPU)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--out', default='scaling.png', help='PNG path; the numbers go to the same name .json')
    return parser.parse_args(argv)


def sweep(specs, sizes, batch, device, throughput=True, warmup=1, iters=3):
    """Rows {model, size, gflops, mparams, images_per_s, peak_mem_mb} for every model and size."""
    rows = []
    for spec in specs:
        subject = build_subject(spec, device=device)
        if subject.task != 'classification':
            raise SpecError(f'{spec} is a {subject.task} model; the scaling sweep compares classifiers.')
        for size in sizes:
            result = subject.flops(size, size)
            row = dict(model=subject.name, size=size, gflops=result.gflops, mparams=result.mparams,
                       images_per_s=None, peak_mem_mb=None)
            if throughput:
                t = measure_inference(subject, batch, size, size, warmup=warmup, iters=iters)
                row.update(images_per_s=t.images_per_s, peak_mem_mb=t.peak_mem_mb)
            rows.append(row)
            tp = f', {row["images_per_s"]:.2f} img/s' if throughput else ''
            print(f'{subject.name} @ {size}: {row["gflops"]:.2f} GFLOPs{tp}', flush=True)
        del subject
        if torch.device(device).type == 'cuda':
            torch.cuda.empty_cache()
    return rows


def format_table(rows):
    lines = ['| model | input | FLOPs (G) | FLOPs / FLOPs@first | img/s | peak (MB) |',
             '|---|---|---:|---:|---:|---:|']
    first = {}
    for r in rows:
        base = first.setdefault(r['model'], r['gflops'])
        tp = f'{r["images_per_s"]:.2f}' if r['images_per_s'] is not None else '–'
        mem = f'{r["peak_mem_mb"]:.0f}' if r['peak_mem_mb'] is not None else '–'
        lines.append(f'| {r["model"]} | {r["size"]}² | {r["gflops"]:.2f} | {r["gflops"] / base:.2f}× | {tp} '
                     f'| {mem} |')
    return '\n'.join(lines)


def plot(rows, path, title=''):
    """FLOPs (left) and, when measured, throughput (right) against the input size, one line per model."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    timed = any(r['images_per_s'] is not None for r in rows)
    fig, axes = plt.subplots(1, 2 if timed else 1, figsize=(10 if timed else 5, 4), squeeze=False)
    models = list(dict.fromkeys(r['model'] for r in rows))
    for model in models:
        mine = [r for r in rows if r['model'] == model]
        sizes = [r['size'] for r in mine]
        axes[0, 0].plot(sizes, [r['gflops'] for r in mine], marker='o', label=model)
        if timed:
            axes[0, 1].plot(sizes, [r['images_per_s'] for r in mine], marker='o', label=model)
    axes[0, 0].set(xlabel='input size (px, square)', ylabel='GFLOPs', title='FLOPs')
    if timed:
        axes[0, 1].set(xlabel='input size (px, square)', ylabel='images / s', title='inference throughput',
                       yscale='log')
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None):
    args = parse_args(argv)
    on_gpu = torch.device(args.device).type == 'cuda'
    warmup = args.warmup if args.warmup is not None else (10 if on_gpu else 1)
    iters = args.iters if args.iters is not None else (30 if on_gpu else 3)
    try:
        rows = sweep(args.models, args.sizes, args.batch, args.device, not args.no_throughput, warmup, iters)
    except SpecError as err:
        sys.exit(f'error: {err}')
    device = torch.cuda.get_device_name(args.device) if on_gpu else f'cpu ({torch.get_num_threads()} threads)'
    title = '' if args.no_throughput else f'{device}, batch {args.batch}, float32'
    print()
    print(format_table(rows))
    plot(rows, args.out, title)
    stem = osp.splitext(args.out)[0]
    with open(stem + '.json', 'w') as f:
        json.dump(dict(device=device, batch=args.batch, rows=rows), f, indent=1)
    print(f'\nwrote {args.out}, {stem}.json')
    return rows


if __name__ == '__main__':
    main()
