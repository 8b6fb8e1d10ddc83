"""Wall time and peak memory of one detection-size image through the VMamba backbone on CPU (inference), or of
a Mask R-CNN training step on it (``--train-detector``).

Run it once per arch: the process itself is the measurement (peak RSS is the process's high-water mark,
``resource.getrusage``), so nothing else has been allocated in it before.

    python tools/analysis/det_memory.py tiny                 # 800x1344, 2 threads, the default backend
    python tools/analysis/det_memory.py vanilla_tiny --live  # also: the model code's own largest tensors
    VMAMBA_SCAN_BACKEND=torch python tools/analysis/det_memory.py tiny   # the chunked PyTorch scan
    python tools/analysis/det_memory.py vanilla_tiny --train-detector    # Mask R-CNN 1x: loss + backward

Printed: RSS after building the model, each forward's wall time, the peak RSS and its increase over the built
model. ``--live`` runs one more forward that tracks every tensor the ops create (not the scan op's internal
scratch: the op is opaque, its output counts) and lists the tensors alive at their peak, by module and op.
"""
import argparse
import os
import resource
import sys
import time


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('arch', help='VMamba variant (tiny, vanilla_tiny, ...)')
    parser.add_argument('--shape', type=int, nargs=2, default=[800, 1344], metavar=('H', 'W'))
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=2, help='forward passes (the first includes warm-up)')
    parser.add_argument('--live', action='store_true', help='also track the live tensors of one more forward')
    parser.add_argument('--top', type=int, default=8, help='tensors listed with --live')
    parser.add_argument('--train-detector', action='store_true',
                        help='time a training step (loss + backward) of configs/detection/maskrcnn_vmamba_<arch>_1x.py '
                             'on the image, with synthetic boxes and masks, instead of the backbone forward')
    return parser.parse_args(argv)


def _rss_mb():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def _max_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault('NUMBA_NUM_THREADS', str(args.threads))  # numba's pool would reset torch's count
    import vmamba  # noqa: F401
    import torch
    from vmamba.models import VMamba
    from vmamba.ops import resolve_backend

    torch.set_num_threads(args.threads)
    if args.train_detector:
        return _train_detector(args, torch)
    model = VMamba(arch=args.arch).eval()
    x = torch.randn(args.batch, 3, *args.shape)
    built = _rss_mb()
    print(f'{args.arch}: {args.batch}x3x{args.shape[0]}x{args.shape[1]}, {args.threads} threads, scan backend '
          f'{resolve_backend(None, "cpu")}; RSS after build {built:.0f} MB', flush=True)
    times = []
    with torch.no_grad():
        for i in range(args.repeats):
            torch.set_num_threads(args.threads)
            start = time.perf_counter()
            outs = model(x)
            times.append(time.perf_counter() - start)
            del outs
            print(f'  forward {i + 1}: {times[-1]:.2f} s', flush=True)
    peak = _max_rss_mb()
    print(f'peak RSS {peak:.0f} MB (+{peak - built:.0f} MB over the built model); best forward '
          f'{min(times):.2f} s')
    if args.live:
        from vmamba.analysis.cpu_profile import LiveTensorPeak
        tracker = LiveTensorPeak(model)
        with torch.no_grad(), tracker:
            model(x)
        print(f'\nlive tensors created by the model code (scan op opaque): peak {tracker.peak_bytes / 2**20:.0f} MB; '
              f'alive then:')
        for nbytes, label, shape in tracker.at_peak[:args.top]:
            print(f'  {nbytes / 2**20:8.1f} MB  {label}  {list(shape)}')
    return dict(times=times, peak_rss_mb=peak, built_rss_mb=built)


def _train_detector(args, torch):
    from vmamba.analysis.subjects import build_subject
    config = os.path.join(os.path.dirname(__file__), '..', '..', 'configs', 'detection',
                          f'maskrcnn_vmamba_{args.arch}_1x.py')
    if not os.path.exists(config):
        sys.exit(f'det_memory: no Mask R-CNN 1x config for {args.arch!r} ({os.path.normpath(config)}); '
                 'pass a variant that has one (tiny, small, base, vanilla_tiny, ...)')
    subject = build_subject(config)
    subject.model.train()
    batch = subject.batch(args.batch, *args.shape, targets=True)
    built = _rss_mb()
    print(f'Mask R-CNN + {args.arch}: {args.batch}x3x{batch.images.shape[2]}x{batch.images.shape[3]}, '
          f'{args.threads} threads, training step (loss + backward); RSS after build {built:.0f} MB', flush=True)
    times = []
    for i in range(args.repeats):
        torch.set_num_threads(args.threads)
        start = time.perf_counter()
        loss = subject.loss(batch)
        loss.backward()
        times.append(time.perf_counter() - start)
        subject.model.zero_grad(set_to_none=True)
        print(f'  step {i + 1}: {times[-1]:.2f} s, loss {loss.item():.3f}', flush=True)
        del loss
    peak = _max_rss_mb()
    print(f'peak RSS {peak:.0f} MB (+{peak - built:.0f} MB over the built model); best step {min(times):.2f} s')
    return dict(times=times, peak_rss_mb=peak, built_rss_mb=built)


if __name__ == '__main__':
    sys.exit(main() and 0)
