"""A small synthetic classification set in the ImageNet folder layout, for demos and CI (nothing to download).

The layout is the one mmpretrain's ``ImageNet`` dataset (and torchvision's ``ImageFolder``) reads::

    root/train/00_disk/00_disk_00000.png      root/val/00_disk/00_disk_00000.png
    root/train/01_ring/...                    root/val/01_ring/...
    root/meta/demo.json                       (how the set was made; see :func:`is_demo_imagenet`)

Class ``k`` is the k-th folder in sorted order, as for the real ImageNet. Each image is one shape of its class
(disk, ring, square, triangle, cross, bars, checker, frame) at a random position, size and tilt, filled with a
random colour from the class's hue band, on a noisy two-colour gradient background. Neighbouring classes'
hue bands overlap, so colour alone gets a network only part of the way; it has to look at the shape too.

Command line::

    python -m vmamba.demo.imagenet data/demo_imagenet --num-classes 6 --train-per-class 64 --val-per-class 16
"""
import colorsys
import os
import os.path as osp

import cv2
import numpy as np

from vmamba.demo.generator import read_json, run_cli, write_atomically, write_json

__all__ = ['SHAPES', 'SPLITS', 'demo_classes', 'render_image', 'generate_demo_imagenet', 'is_demo_imagenet',
           'demo_set_classes']

#: The shapes the classes draw, in class order (a set with n classes uses the first n).
SHAPES = ('disk', 'ring', 'square', 'triangle', 'cross', 'bars', 'checker', 'frame')
SPLITS = ('train', 'val')
_SPEC_FILE = osp.join('meta', 'demo.json')


def demo_classes(num_classes):
    """Folder names of the classes of an n-class set (they sort in class order)."""
    if not 2 <= num_classes <= len(SHAPES):
        raise ValueError(f'num_classes must be in 2..{len(SHAPES)} (one shape per class), got {num_classes}')
    return tuple(f'{k:02d}_{shape}' for k, shape in enumerate(SHAPES[:num_classes]))


def _shape_mask(shape, u, v, s):
    """Boolean mask of ``shape`` of half-size ``s`` in shape-centred, tilted coordinates (u, v)."""
    r = np.hypot(u, v)
    box = np.maximum(np.abs(u), np.abs(v))
    if shape == 'disk':
        return r <= s
    if shape == 'ring':
        return (r <= s) & (r >= 0.55 * s)
    if shape == 'square':
        return box <= 0.8 * s
    if shape == 'triangle':  # pointing up: the bottom edge at v = s/2, the apex at v = -s
        height = (v + s) / (1.5 * s)  # 0 at the apex, 1 at the base
        return (height >= 0) & (height <= 1) & (np.abs(u) <= 0.9 * s * height)
    if shape == 'cross':
        arm = 0.3 * s
        return ((np.abs(u) <= arm) & (np.abs(v) <= s)) | ((np.abs(v) <= arm) & (np.abs(u) <= s))
    if shape == 'bars':  # three horizontal bars inside a square
        period = 2 * s / 3
        return (box <= s) & (np.mod(v + s, period) < 0.5 * period)
    if shape == 'checker':  # a 4x4 chequerboard inside a square
        cell = s / 2
        return (box <= s) & ((np.floor((u + s) / cell) + np.floor((v + s) / cell)) % 2 == 0)
    if shape == 'frame':
        return (box <= 0.85 * s) & (box >= 0.55 * s)
    raise ValueError(f'unknown shape {shape!r}')


def _hsv(h, s, v):
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v)) * 255


def render_image(rng, label, num_classes, size=64):
    """One RGB uint8 image (size, size, 3) of class ``label`` of an n-class set."""
    shape = SHAPES[label]
    # Background: a gradient between two greyish colours at a random angle, plus pixel noise.
    rows, cols = np.mgrid[0:size, 0:size] / (size - 1)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * (cols - 0.5) + np.sin(angle) * (rows - 0.5) + 0.71) / 1.42
    c0, c1 = (_hsv(rng.uniform(), rng.uniform(0, 0.3), rng.uniform(0.2, 0.9)) for _ in range(2))
    image = c0 * (1 - t[..., None]) + c1 * t[..., None]

    # Foreground: the class's shape, tilted by up to 20 degrees, in a colour from the class's hue band.
    # Bands are 1/n wide around hue k/n and jittered by +-0.75/n, so neighbouring classes overlap.
    half = rng.uniform(0.22, 0.38)
    cy, cx = rng.uniform(half * 0.8, 1 - half * 0.8, 2)
    tilt = np.deg2rad(rng.uniform(-20, 20))
    dy, dx = rows - cy, cols - cx
    u = np.cos(tilt) * dx + np.sin(tilt) * dy
    v = -np.sin(tilt) * dx + np.cos(tilt) * dy
    mask = _shape_mask(shape, u, v, half)
    hue = (label + rng.uniform(-0.75, 0.75)) / num_classes
    image[mask] = _hsv(hue, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))

    image += rng.normal(0, 10, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _spec(num_classes, train_per_class, val_per_class, size, seed):
    return dict(classes=list(demo_classes(num_classes)), train_per_class=train_per_class,
                val_per_class=val_per_class, size=size, seed=seed)


def _read_spec(root):
    return read_json(osp.join(root, _SPEC_FILE))


def demo_set_classes(root):
    """The class (folder) names of the demo set at ``root``, in label order."""
    spec = _read_spec(root)
    if spec is None:
        raise FileNotFoundError(f'No demo set at {root} (no {_SPEC_FILE}); write one with '
                                f'python -m vmamba.demo.imagenet {root}')
    return tuple(spec['classes'])


def is_demo_imagenet(root, num_classes=None, train_per_class=None, val_per_class=None, size=None, seed=None):
    """Whether ``root`` holds a complete demo set; with arguments, one made with exactly those settings."""
    spec = _read_spec(root)
    if spec is None:
        return False
    wanted = dict(num_classes=num_classes, train_per_class=train_per_class, val_per_class=val_per_class,
                  size=size, seed=seed)
    have = dict(spec, num_classes=len(spec['classes']))
    if any(value is not None and have.get(key) != value for key, value in wanted.items()):
        return False
    for split, per_class in zip(SPLITS, (spec['train_per_class'], spec['val_per_class'])):
        for name in spec['classes']:
            folder = osp.join(root, split, name)
            if not osp.isdir(folder) or len(os.listdir(folder)) != per_class:
                return False
    return True


def generate_demo_imagenet(root, num_classes=6, train_per_class=64, val_per_class=16, size=64, seed=0,
                           overwrite=False):
    """Write the demo set under ``root`` and return its absolute path. Deterministic for given settings.

    A complete set made with the same settings is kept as it is. Anything else already at ``root`` is an
    error unless ``overwrite`` (so a real dataset is never written over by mistake). Files go to a temporary
    folder next to ``root`` that is renamed into place at the end, so concurrent callers (several processes)
    never see a half-written set (:func:`.generator.write_atomically`).
    """
    if train_per_class < 1 or val_per_class < 1:
        raise ValueError(f'need at least one image per class and split, got train_per_class={train_per_class}, '
                         f'val_per_class={val_per_class}')
    if size < 16:
        raise ValueError(f'size must be at least 16 pixels, got {size}')
    spec = _spec(num_classes, train_per_class, val_per_class, size, seed)
    root = osp.abspath(osp.expanduser(str(root)))
    settings = dict(num_classes=num_classes, train_per_class=train_per_class, val_per_class=val_per_class,
                    size=size, seed=seed)
    if is_demo_imagenet(root, **settings):
        return root
    if osp.exists(root) and os.listdir(root) and not overwrite:
        made_by_us = osp.isfile(osp.join(root, _SPEC_FILE))
        raise FileExistsError(
            f'{root} is not empty and is not a demo set made with {settings}'
            + (' (it is a demo set made with other settings)' if made_by_us else '')
            + '; remove it, choose another folder, or pass overwrite=True (--overwrite).')

    def build(staging):
        # One generator per split, so the validation images don't change when the training split grows.
        for split_index, (split, per_class) in enumerate(zip(SPLITS, (train_per_class, val_per_class))):
            rng = np.random.default_rng([seed, split_index])
            for label, name in enumerate(spec['classes']):
                os.makedirs(osp.join(staging, split, name))
                for i in range(per_class):
                    image = render_image(rng, label, num_classes, size)
                    cv2.imwrite(osp.join(staging, split, name, f'{name}_{i:05d}.png'), image[:, :, ::-1])
        write_json(osp.join(staging, _SPEC_FILE), spec)

    # A failed rename is fine only if a concurrent writer left the same set.
    return write_atomically(root, '.demo_imagenet-', build, replace=overwrite,
                            complete=lambda found: is_demo_imagenet(found, **settings))


def main(argv=None):
    run_cli(argv, description='Write a synthetic ImageNet-layout classification set.',
            default_root='data/demo_imagenet', generate=generate_demo_imagenet,
            helps=dict(num_classes=f'2..{len(SHAPES)}', size='image side in pixels'),
            overwrite_help='replace whatever is at root',
            report=lambda root, s: (f'Demo ImageNet-layout set: {s["num_classes"]} classes x '
                                    f'({s["train_per_class"]} train + {s["val_per_class"]} val) images of '
                                    f'{s["size"]}x{s["size"]} px in {root}'))


if __name__ == '__main__':
    main()
