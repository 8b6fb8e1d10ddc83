"""Throughput and peak memory of a :class:`~vmamba.analysis.subjects.Subject`, as the official repo measures them.

* inference: ``predict`` under ``torch.no_grad()`` in eval mode, float32 (the paper's "TP");
* training: forward + loss + backward in train mode, under autocast where available (the paper's
  "Train TP"); the optimizer step is excluded, gradients are dropped between iterations;
* warm-up iterations first (kernel autotuning, allocator, cudnn benchmark), then ``iters`` timed ones,
  bracketed by ``torch.cuda.synchronize()`` on GPU; throughput = iters * batch / elapsed seconds.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` over the timed iterations (the official number;
it includes weights and, in training, gradients). On CPU there is no allocator counter, so freed heap pages are
first handed back to the OS (``malloc_trim``), then the resident set size is sampled from ``/proc/self/statm``
every few milliseconds and the peak *increase* over the RSS before warm-up is reported: roughly the memory the
step needs on top of the already-built model (activations, and gradients in training).
"""
import ctypes
import gc
import os
import threading
import time
from dataclasses import asdict, dataclass
from typing import Optional

import torch

__all__ = ['Timing', 'autocast_dtype', 'measure', 'measure_inference', 'measure_training', 'PeakMemory']

AMP_CHOICES = ('auto', 'off', 'bf16', 'fp16')


@dataclass
class Timing:
    """One measurement. ``peak_mem_mb`` follows the device's convention (see the module docstring)."""
    model: str
    mode: str  # 'inference' or 'training'
    device: str
    batch: int
    height: int
    width: int
    dtype: str  # 'float32' or the autocast dtype
    iters: int
    seconds: float  # wall time of the timed iterations
    peak_mem_mb: Optional[float]

    @property
    def images_per_s(self):
        return self.iters * self.batch / self.seconds

    def as_dict(self):
        return dict(asdict(self), images_per_s=self.images_per_s)


def autocast_dtype(amp, device):
    """The autocast dtype for ``amp`` in :data:`AMP_CHOICES` on ``device``, or None for float32.

    ``auto``: bfloat16 on GPUs that support it, else float16; float32 on CPU (CPU autocast is only a
    win on CPUs with bf16 matrix units, so it is opt-in there with ``bf16``).
    """
    device = torch.device(device)
    if amp not in AMP_CHOICES:
        raise ValueError(f'amp must be one of {AMP_CHOICES}, got {amp!r}')
    if amp == 'off' or (amp == 'auto' and device.type != 'cuda'):
        return None
    if amp == 'auto':
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {'bf16': torch.bfloat16, 'fp16': torch.float16}[amp]


def _dtype_name(dtype):
    return str(dtype or torch.float32).replace('torch.', '')


def _synchronize(device):
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)


def _release_free_memory():
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``), so that the RSS measured next reflects live
    memory and not what an earlier model left in the allocator's arenas. A no-op where glibc is absent."""
    gc.collect()
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _cpu_baseline(device):
    """RSS before a CPU measurement (None on CUDA, where the allocator has its own counter)."""
    if device.type == 'cuda':
        return None
    _release_free_memory()
    return _rss_bytes()


def _rss_bytes():
    """Resident set size of this process in bytes (Linux ``/proc``), or None where it is unavailable."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError, AttributeError):
        return None


class PeakMemory:
    """Peak memory during a ``with`` block: CUDA allocator peak, or sampled CPU RSS increase over ``baseline``."""

    def __init__(self, device, baseline=None, interval=0.002):
        self.device = torch.device(device)
        self.baseline = baseline
        self.interval = interval
        self.peak_mb = None
        self._peak = 0
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        if self.device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(self.device)
        elif _rss_bytes() is not None:
            if self.baseline is None:
                self.baseline = _rss_bytes()
            self._peak = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        if self.device.type == 'cuda':
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, _rss_bytes())
            self.peak_mb = max(self._peak - self.baseline, 0) / 2**20
        return False


def _run(step, warmup, iters, device, baseline):
    for _ in range(warmup):
        step()
    _synchronize(device)
    with PeakMemory(device, baseline) as mem:
        start = time.perf_counter()
        for _ in range(iters):
            step()
        _synchronize(device)
        seconds = time.perf_counter() - start
    return seconds, mem.peak_mb


def measure_inference(subject, batch_size, height, width, warmup=10, iters=30, amp='off'):
    """Inference throughput: ``subject.predict`` in eval mode without gradients (float32 unless ``amp``)."""
    device = subject.device
    dtype = autocast_dtype(amp, device)
    batch = subject.batch(batch_size, height, width)
    subject.model.eval()
    baseline = _cpu_baseline(device)

    def step():
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            subject.predict(batch)

    seconds, peak = _run(step, warmup, iters, device, baseline)
    h, w = batch.images.shape[-2:]
    return Timing(subject.name, 'inference', str(device), batch_size, h, w, _dtype_name(dtype), iters, seconds,
                  peak)


def measure_training(subject, batch_size, height, width, warmup=10, iters=30, amp='auto'):
    """Training throughput: forward + loss + backward in train mode under autocast (``amp``), no optimizer."""
    device = subject.device
    dtype = autocast_dtype(amp, device)
    batch = subject.batch(batch_size, height, width, targets=True)
    subject.model.train()
    baseline = _cpu_baseline(device)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = subject.loss(batch)
        loss.backward()
        subject.model.zero_grad(set_to_none=True)

    seconds, peak = _run(step, warmup, iters, device, baseline)
    subject.model.eval()
    h, w = batch.images.shape[-2:]
    return Timing(subject.name, 'training', str(device), batch_size, h, w, _dtype_name(dtype), iters, seconds,
                  peak)


def measure(subject, mode, *args, **kwargs):
    """``measure_inference`` or ``measure_training`` by ``mode``."""
    fn = {'inference': measure_inference, 'training': measure_training}.get(mode)
    if fn is None:
        raise ValueError(f"mode must be 'inference' or 'training', got {mode!r}")
    return fn(subject, *args, **kwargs)
