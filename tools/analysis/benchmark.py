"""Inference and training throughput (img/s) and peak memory of VMamba models, against Swin-T in the same run.

Inference: ``predict`` in eval mode without gradients, float32. Training: forward + loss + backward in train
mode under autocast (``--amp``; bf16/fp16 on GPU, off on CPU by default), optimizer excluded. Warm-up
iterations first, then timed ones with CUDA synchronisation (see vmamba/analysis/timing.py). Inputs are
synthetic, so no dataset is needed; detectors and segmentors get synthetic boxes/masks/label maps.

    # the paper's ImageNet setting (one A100 there): batch 128 at 224x224
    python tools/analysis/benchmark.py tiny small base --batch 128 --device cuda
    # a detector against mmdet's Swin-T Mask R-CNN (the default baseline for detection configs)
    python tools/analysis/benchmark.py configs/detection/maskrcnn_vmamba_tiny_1x.py --batch 2 --shape 800 1280
    # CPU, small
    python tools/analysis/benchmark.py tiny --device cpu --batch 8 --warmup 2 --iters 5 --out bench.json
    # CPU, one thread, VMamba-T and vanilla-T against Swin-T (tools/analysis/profile_cpu.py says where time goes)
    python tools/analysis/benchmark.py tiny vanilla_tiny --device cpu --threads 1 --batch 8 --modes inference
    # eager against torch.compile (Inductor), interleaved
    python tools/analysis/benchmark.py tiny --device cpu --compile --interleave --compare none

The Swin-T baseline matches the task of the first model (mmpretrain Swin-T, mmdet Swin-T Mask R-CNN or mmseg
Swin-T UperNet); ``--compare`` names others, ``--compare none`` skips it. Without mmpretrain, Swin-T is timm's
``swin_tiny_patch4_window7_224`` (the same architecture); without either, the run says the baseline was skipped.
"""
import argparse
import copy
import json
import os
import sys
import time

import vmamba  # noqa: F401  (first: it quiets setuptools' pkg_resources notice before mmengine is imported)
import torch
from mmengine.config import DictAction

from vmamba.analysis import DEFAULT_SHAPES, SWIN_BASELINE, SpecError, build_subject
from vmamba.analysis.timing import AMP_CHOICES, Timing, autocast_dtype, measure

#: Default (GPU, CPU) batch sizes per task: the paper's 128 for ImageNet; small dense-prediction batches.
DEFAULT_BATCH = {'classification': (128, 8), 'detection': (2, 1), 'segmentation': (2, 1)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('models', nargs='+', help='variant names, baseline names or config files')
    parser.add_argument('--compare', nargs='+', default=['swin'],
                        help="baselines to add ('swin' = the Swin-T model of the first model's task; "
                             "'none' = no baseline)")
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--batch', type=int, help='batch size (default: 128/8 for classification on GPU/CPU, '
                                                  '2/1 for detection and segmentation)')
    parser.add_argument('--shape', type=int, nargs='+', metavar='N', help="input H W (default: the task's size)")
    parser.add_argument('--modes', nargs='+', choices=['inference', 'training'], default=['inference', 'training'])
    parser.add_argument('--warmup', type=int, help='warm-up iterations (default 10 on GPU, 2 on CPU)')
    parser.add_argument('--iters', type=int, help='timed iterations (default 30 on GPU, 5 on CPU)')
    parser.add_argument('--amp', choices=AMP_CHOICES, default='auto', help='autocast for training (auto: bf16/fp16 '
                                                                             'on GPU, off on CPU)')
    parser.add_argument('--inference-amp', choices=AMP_CHOICES, default='off',
                        help="autocast for inference too (default off: float32, as the paper's throughput)")
    parser.add_argument('--threads', type=int, help="torch CPU threads (default: torch's default, e.g. "
                                                     '$OMP_NUM_THREADS)')
    parser.add_argument('--tf32', action='store_true', help='allow TF32 matmuls/convs on Ampere+ GPUs')
    parser.add_argument('--interleave', action='store_true',
                        help='time the models round-robin, one step of each per round, and report each one\'s '
                             'fastest step (no memory figure): on a shared machine, load changes then hit every '
                             'model alike, so the ratios hold')
    parser.add_argument('--compile', action='store_true',
                        help='also time each named model under torch.compile (Inductor; the first warm-up step '
                             'compiles), reported as "<model> (compiled)" beside the eager one')
    parser.add_argument('--out', help='write the measurements as JSON to this file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys (key=value)')
    args = parser.parse_args(argv)
    if args.shape is not None and len(args.shape) not in (1, 2):
        parser.error('--shape takes H W or a single size')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        parser.error('--device cuda, but no CUDA device is visible; use --device cpu')
    return args


def _specs(args, first_task):
    specs = list(args.models)
    for name in args.compare:
        if name == 'none':
            continue
        name = SWIN_BASELINE[first_task] if name == 'swin' else name
        if name not in specs:
            specs.append(name)
    return specs


def format_table(timings):
    lines = ['| model | input | batch | inference (img/s) | inference peak (MB) | training (img/s) | '
             'training dtype | training peak (MB) |',
             '|---|---|---:|---:|---:|---:|---|---:|']
    by_model = {}
    for t in timings:
        by_model.setdefault(t.model, {})[t.mode] = t
    for model, modes in by_model.items():
        any_t = next(iter(modes.values()))
        inf, tr = modes.get('inference'), modes.get('training')

        def num(t, value):
            return '–' if t is None or value is None else f'{value:.1f}'
        lines.append(f'| {model} | {any_t.height}×{any_t.width} | {any_t.batch} | '
                     f'{num(inf, inf and inf.images_per_s)} | {num(inf, inf and inf.peak_mem_mb)} | '
                     f'{num(tr, tr and tr.images_per_s)} | {tr.dtype if tr else "–"} | '
                     f'{num(tr, tr and tr.peak_mem_mb)} |')
    return '\n'.join(lines)


def format_ratios(timings, baseline):
    """One line per mode: each model's img/s over the baseline's, measured in this run (the reliable figure on
    a shared machine, where absolute timings drift between runs)."""
    base = {t.mode: t.images_per_s for t in timings if t.model == baseline}
    lines = []
    for mode, ref in base.items():
        ratios = [f'{t.model} {t.images_per_s / ref:.2f}x' for t in timings if t.mode == mode and t.model != baseline]
        if ratios:
            lines.append(f'{mode} img/s relative to {baseline}: ' + ', '.join(ratios))
    return '\n'.join(lines)


def _step(subject, mode, batch_size, height, width, amp):
    """One step as :mod:`vmamba.analysis.timing` runs it: ``predict`` without gradients in eval mode, or loss +
    backward in train mode, under autocast ``amp`` (the mode's), gradients dropped. Returns (step, its Timing
    fields)."""
    device = subject.device
    dtype = autocast_dtype(amp, device)
    batch = subject.batch(batch_size, height, width, targets=mode == 'training')

    def step():
        subject.model.train(mode == 'training')
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            if mode == 'inference':
                with torch.no_grad():
                    subject.predict(batch)
                return
            loss = subject.loss(batch)
        loss.backward()
        subject.model.zero_grad(set_to_none=True)
    h, w = batch.images.shape[-2:]
    return step, (subject.name, mode, str(device), batch_size, h, w, str(dtype or torch.float32).split('.')[-1])


def measure_interleaved(subjects, modes, batch_of, shape_of, warmup, iters, amp_of):
    """Best-of timings of every subject and mode, taken round-robin: ``iters`` rounds of one step each;
    ``amp_of(mode)`` is the mode's autocast choice."""
    timings = []
    threads = torch.get_num_threads()
    on_gpu = subjects[0].device.type == 'cuda'
    for mode in modes:
        steps = [_step(s, mode, batch_of(s), *shape_of(s), amp_of(mode)) for s in subjects]
        for step, _ in steps:
            for _ in range(max(warmup, 1)):
                step()
        torch.set_num_threads(threads)
        best = [float('inf')] * len(steps)
        for _ in range(iters):
            for i, (step, _) in enumerate(steps):
                if on_gpu:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                step()
                if on_gpu:
                    torch.cuda.synchronize()
                best[i] = min(best[i], time.perf_counter() - start)
        timings += [Timing(*fields, iters=1, seconds=b, peak_mem_mb=None) for (_, fields), b in zip(steps, best)]
    for s in subjects:
        s.model.eval()
    return timings


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    on_gpu = device.type == 'cuda'
    if on_gpu:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    if args.threads:
        torch.set_num_threads(args.threads)
    # The compiled CPU scan's thread pool (numba, OpenMP) would otherwise start with every core and leave torch's
    # own thread count raised to that: pin it to torch's before the first scan.
    os.environ.setdefault('NUMBA_NUM_THREADS', str(torch.get_num_threads()))
    warmup = args.warmup if args.warmup is not None else (10 if on_gpu else 2)
    iters = args.iters if args.iters is not None else (30 if on_gpu else 5)

    skipped = []

    def build(spec):
        try:
            return build_subject(spec, cfg_options=args.cfg_options, device=device,
                                 input_size=args.shape[0] if args.shape else 224)
        except SpecError as err:
            if spec in args.models:
                sys.exit(f'error: {err}')
            skipped.append(dict(model=spec, mode='skipped', reason=f'skipped: {err}'))  # a baseline: say so
            print(f'{spec} skipped: {err}', flush=True)
            return None

    first = build(args.models[0])  # its task picks the Swin-T baseline
    timings = []
    specs = _specs(args, first.task)

    def shape_of(subject):
        return (args.shape[0], args.shape[-1]) if args.shape else DEFAULT_SHAPES[subject.task]

    def batch_of(subject):
        return args.batch or DEFAULT_BATCH[subject.task][0 if on_gpu else 1]

    def amp_of(mode):
        return args.amp if mode == 'training' else args.inference_amp

    def subjects_of(i, spec):
        """The subject of ``spec`` (the first is already built), and with --compile its compiled twin."""
        subject = first if i == 0 else build(spec)
        if subject is None or not (args.compile and i < len(args.models)):
            return [subject]
        twin = copy.copy(subject)
        twin.model, twin.name = torch.compile(subject.model), f'{subject.name} (compiled)'
        return [subject, twin]

    for subject in (s for i, spec in enumerate([] if args.interleave else specs) for s in subjects_of(i, spec)
                    if s is not None):
        (height, width), batch = shape_of(subject), batch_of(subject)
        for mode in args.modes:
            # Inference in float32 as the paper's "TP" (unless --inference-amp); training under autocast as its
            # "Train TP".
            t = measure(subject, mode, batch, height, width, warmup=warmup, iters=iters, amp=amp_of(mode))
            timings.append(t)
            mem = f', peak {t.peak_mem_mb:.0f} MB' if t.peak_mem_mb is not None else ''
            print(f'{subject.name} {mode}: {t.images_per_s:.2f} img/s ({t.dtype}, batch {t.batch}, '
                  f'{t.height}x{t.width}{mem})', flush=True)
        first = subject = None  # free the model before building the next one
        if on_gpu:
            torch.cuda.empty_cache()

    if args.interleave:
        subjects = [s for i, spec in enumerate(specs) for s in subjects_of(i, spec) if s is not None]
        timings = measure_interleaved(subjects, args.modes, batch_of, shape_of, warmup, iters, amp_of)
        for t in timings:
            print(f'{t.model} {t.mode}: {t.images_per_s:.2f} img/s ({t.dtype}, batch {t.batch}, '
                  f'{t.height}x{t.width}, fastest of {iters} interleaved steps)', flush=True)
    memory_note = ('peak = torch.cuda.max_memory_allocated' if on_gpu
                   else 'peak = sampled RSS increase over the built model')
    if args.interleave:
        memory_note = 'interleaved, fastest step per model, no memory figure'
    print(f'\ndevice: {torch.cuda.get_device_name(device) if on_gpu else "cpu"} '
          f'({torch.get_num_threads()} threads), warm-up {warmup}, timed {iters}; {memory_note}\n')
    print(format_table(timings))
    if len(specs) > len(args.models) and timings:  # a baseline was added
        baseline = next((t.model for t in timings if t.model not in args.models), None)
        if baseline:
            print('\n' + format_ratios(timings, baseline))
    for s in skipped:
        print(f'\n{s["model"]} {s["reason"]}')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump([t.as_dict() for t in timings] + skipped, f, indent=1)
        print(f'\nwrote {args.out}')
    return timings


if __name__ == '__main__':
    main()
