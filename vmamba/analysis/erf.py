"""Effective receptive fields (ERF), as in Figure 5 of the VMamba paper (after Ding et al., RepLKNet).

For each image, the ERF map is the gradient of the central pixel of the last backbone feature map with
respect to the input pixels: ``grad = d relu(F[:, :, h/2, w/2]).sum() / d image``, then ``relu(grad)``
summed over the colour channels. Maps are averaged over images (non-finite ones are skipped, as the
official script does). How far the mass spreads from the centre is what the figure compares: a CNN's ERF
is a compact blob, VMamba's covers the whole image after training.

Display: contributions span several orders of magnitude, so :func:`log_scale` shows
``log10(map / max)`` over a fixed number of decades (0 = the peak, 1 decade per colour band).
:func:`area_ratios` gives RepLKNet's scalar summary: the smallest centred square holding a fraction t of
the total contribution, as a share of the image area (larger = wider ERF).
"""
import glob
import math
import os.path as osp

import numpy as np
import torch

__all__ = ['erf_map', 'average_erf', 'log_scale', 'area_ratios', 'synthetic_images', 'load_images',
           'save_erf_figure', 'IMAGENET_MEAN', 'IMAGENET_STD']

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')


def erf_map(features_fn, images):
    """Per-image ERF maps (B, H, W) of ``features_fn`` (images -> (B, C, h, w)) at ``images`` (B, 3, H, W)."""
    images = images.detach().clone().requires_grad_(True)
    feats = features_fn(images)
    if feats.dim() != 4:
        raise ValueError(f'features_fn must return a (B, C, h, w) map, got shape {tuple(feats.shape)}')
    h, w = feats.shape[-2:]
    central = torch.relu(feats[:, :, h // 2, w // 2]).sum()
    (grad,) = torch.autograd.grad(central, images)
    return torch.relu(grad).sum(dim=1).detach()


def average_erf(features_fn, batches):
    """Mean ERF map (H, W) over every image of ``batches`` (an iterable of (B, 3, H, W) tensors).

    Returns ``(mean_map as float64 numpy, number of images used)``; images whose map is not finite are skipped.
    """
    total, count = None, 0
    for images in batches:
        maps = erf_map(features_fn, images).double()
        finite = torch.isfinite(maps).flatten(1).all(dim=1)
        if finite.any():
            part = maps[finite].sum(dim=0).cpu()
            total = part if total is None else total + part
            count += int(finite.sum())
    if count == 0:
        raise RuntimeError('Every ERF map was non-finite (NaN/inf gradients); check the model and its weights.')
    return (total / count).numpy(), count


def log_scale(erf, decades=3.0):
    """``erf`` on a log scale in [0, 1]: 1 at the peak, 0 at ``10**-decades`` of the peak and below."""
    erf = np.asarray(erf, dtype=np.float64)
    peak = erf.max()
    if peak <= 0:
        return np.zeros_like(erf)
    rel = np.maximum(erf / peak, 10.0 ** -decades)
    return 1.0 + np.log10(rel) / decades


def area_ratios(erf, thresholds=(0.2, 0.3, 0.5, 0.99)):
    """For each threshold t: the area share of the smallest centred square whose contribution is >= t of the
    total (RepLKNet's high-contribution area ratio). 1.0 when even the whole image falls short (rounding)."""
    erf = np.asarray(erf, dtype=np.float64)
    h, w = erf.shape
    total = erf.sum()
    cy, cx = h // 2, w // 2
    ratios = {}
    for t in thresholds:
        ratio = 1.0
        for r in range(0, max(h, w)):
            y0, y1 = max(cy - r, 0), min(cy + r + 1, h)
            x0, x1 = max(cx - r, 0), min(cx + r + 1, w)
            if erf[y0:y1, x0:x1].sum() >= t * total:
                ratio = (y1 - y0) * (x1 - x0) / (h * w)
                break
        ratios[t] = ratio
    return ratios


def synthetic_images(num, size, batch_size=1, seed=0):
    """``num`` images of standard-normal pixels (already "normalised"), in batches. No data needed; note that
    an ERF on noise is not the ERF on natural images (use :func:`load_images` for the paper's figure)."""
    gen = torch.Generator().manual_seed(seed)
    for start in range(0, num, batch_size):
        yield torch.randn(min(batch_size, num - start), 3, size, size, generator=gen)


def _image_files(root):
    files = sorted(f for f in glob.glob(osp.join(root, '**', '*'), recursive=True)
                   if f.lower().endswith(_IMAGE_EXTENSIONS))
    if not files:
        raise FileNotFoundError(f'No images ({", ".join(_IMAGE_EXTENSIONS)}) under {root!r}. Point --images at '
                                'a folder of natural images, e.g. the ImageNet val set, or leave it out to '
                                'use synthetic noise images.')
    return files


def load_images(root, num, size, batch_size=1):
    """The first ``num`` images under ``root`` (sorted, recursive), resized (shorter side, bicubic) and
    centre-cropped to ``size``, ImageNet-normalised, in batches."""
    from PIL import Image

    files = _image_files(root)[:num]
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    batch = []
    for path in files:
        img = Image.open(path).convert('RGB')
        scale = size / min(img.size)
        img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))),
                         Image.BICUBIC)
        left, top = (img.width - size) // 2, (img.height - size) // 2
        img = img.crop((left, top, left + size, top + size))
        pixels = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        batch.append((pixels - mean) / std)
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


def save_erf_figure(maps, path, decades=3.0, titles=None):
    """Save ERF maps side by side as a PNG: one log-scaled heat map per model, with a shared colour bar.

    ``maps``: {name: (H, W) array}; ``titles``: optional {name: title}.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    n = len(maps)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n + 0.8, 3.4), squeeze=False)
    image = None
    for ax, (name, erf) in zip(axes[0], maps.items()):
        image = ax.imshow(log_scale(erf, decades), cmap='RdYlGn', vmin=0.0, vmax=1.0, interpolation='nearest')
        ax.set_title((titles or {}).get(name, name), fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(image, ax=list(axes[0]), fraction=0.046 / max(1, math.sqrt(n)), pad=0.02)
    ticks = np.linspace(0, 1, int(decades) + 1)
    bar.set_ticks(ticks)
    bar.set_ticklabels([f'1e-{int(round((1 - t) * decades))}' if t < 1 else 'peak' for t in ticks])
    bar.set_label('contribution / peak (log)')
    fig.savefig(path, dpi=120, bbox_inches='tight')
    plt.close(fig)
    return path
