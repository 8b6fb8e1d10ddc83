"""A small synthetic segmentation set in the ADE20K layout, for demos and CI (nothing to download).

It is laid out exactly as mmseg's ``ADE20KDataset`` expects the real ADEChallengeData2016::

    root/images/training/demo_00000.jpg        root/annotations/training/demo_00000.png
    root/images/validation/demo_00000.jpg      root/annotations/validation/demo_00000.png

Annotations are single-channel uint8 PNGs holding *ADE20K label ids*: 0 is "other" (ignored once mmseg's
``reduce_zero_label`` maps it to 255) and k is the ADE20K class k - 1 (``ADE20KDataset.METAINFO['classes']``).
So the files are a genuine (if tiny) ADE20K set: the 150-class configs read them unchanged, and the demo
config narrows the classes to :data:`DEMO_CLASSES` through mmseg's ``metainfo=dict(classes=...)`` label map.

Each image is a street scene: sky over buildings with windows, trees, grass and a road, plus "other"
objects (cars, signs) labelled 0. Colours and shapes are randomised per image and the pixels are noisy,
so a network has to use texture and layout, not a colour lookup, for the harder pairs (tree vs grass,
road vs building).

Command line::

    python -m vmamba.demo.ade20k data/demo_ade20k --num-train 64 --num-val 16
"""
import os
import os.path as osp

import cv2
import numpy as np

from vmamba.demo.generator import run_cli, write_atomically

__all__ = ['DEMO_CLASSES', 'ADE20K_IDS', 'render_scene', 'generate_demo_ade20k', 'is_demo_ade20k']

#: The classes the demo scenes contain, as named in ADE20K (mmseg's ``ADE20KDataset.METAINFO``).
DEMO_CLASSES = ('building', 'sky', 'tree', 'road', 'grass')

#: Their ADE20K label ids as stored in the annotation PNGs (class index + 1; 0 = other).
ADE20K_IDS = {'building': 2, 'sky': 3, 'tree': 5, 'road': 7, 'grass': 10}
OTHER = 0

SPLITS = ('training', 'validation')


def _jitter(rng, rgb, amount):
    return np.clip(np.asarray(rgb, float) + rng.uniform(-amount, amount, 3), 0, 255)


def _paint(image, label, mask, rgb, ade_id, rng, noise):
    """Fill ``mask`` with colour ``rgb`` plus per-pixel noise of std ``noise``, and its label."""
    count = int(mask.sum())
    image[mask] = rgb + rng.normal(0, noise, (count, 1)) + rng.normal(0, noise / 3, (count, 3))
    label[mask] = ade_id


def _blotches(rng, height, width, cells):
    """Smooth random field in [0, 1]: coarse noise upsampled, for leafy and grassy textures."""
    coarse = rng.uniform(0, 1, (max(2, height // cells), max(2, width // cells))).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def render_scene(rng, height=96, width=128):
    """One street scene: ``(image, label)``, an RGB uint8 (H, W, 3) array and ADE20K ids uint8 (H, W)."""
    image = np.zeros((height, width, 3), np.float64)
    label = np.zeros((height, width), np.uint8)
    rows, cols = np.mgrid[0:height, 0:width]
    horizon = int(height * rng.uniform(0.38, 0.55))

    # Sky: a vertical gradient, lighter towards the horizon.
    top, bottom = _jitter(rng, (90, 150, 225), 20), _jitter(rng, (190, 215, 240), 15)
    t = (rows[:horizon, :, None] / max(horizon - 1, 1))
    image[:horizon] = top * (1 - t) + bottom * t + rng.normal(0, 3, (horizon, width, 1))
    label[:horizon] = ADE20K_IDS['sky']

    # Ground: grass everywhere, with a blotchy texture.
    ground = rows >= horizon
    grass = _jitter(rng, (105, 160, 60), 20)
    texture = _blotches(rng, height, width, 6)[ground][:, None]
    _paint(image, label, ground, grass, ADE20K_IDS['grass'], rng, 10)
    image[ground] += (texture - 0.5) * 50

    # Road: a trapezoid towards a vanishing point on the horizon, with a dashed centre line.
    centre = width * rng.uniform(0.3, 0.7)
    half_bottom, half_top = width * rng.uniform(0.25, 0.45), width * rng.uniform(0.03, 0.08)
    depth = np.clip((rows - horizon) / max(height - 1 - horizon, 1), 0, 1)
    half = half_top + (half_bottom - half_top) * depth
    road = ground & (np.abs(cols - centre) <= half)
    _paint(image, label, road, _jitter(rng, (105, 105, 110), 20), ADE20K_IDS['road'], rng, 5)
    dashes = road & (np.abs(cols - centre) <= 0.6 + 1.5 * depth) & (((rows - horizon) // 4) % 2 == 0)
    image[dashes] = _jitter(rng, (235, 235, 225), 10)

    # Buildings standing on the horizon, with a grid of windows.
    for _ in range(rng.integers(1, 4)):
        w = int(width * rng.uniform(0.15, 0.35))
        x0 = int(rng.integers(0, max(1, width - w)))
        y0 = int(horizon - height * rng.uniform(0.15, 0.42))
        box = (cols >= x0) & (cols < x0 + w) & (rows >= max(y0, 0)) & (rows < horizon + 2)
        facade = _jitter(rng, [(170, 120, 90), (150, 150, 150), (210, 190, 150)][rng.integers(3)], 20)
        _paint(image, label, box, facade, ADE20K_IDS['building'], rng, 4)
        step = int(rng.integers(5, 8))
        windows = box & ((cols - x0) % step >= 2) & ((rows - y0) % step >= 2) & (rows < horizon - 2)
        image[windows] = _jitter(rng, (60, 70, 90), 15)

    # Trees: a trunk under a leafy canopy; both are "tree" in ADE20K.
    for _ in range(rng.integers(1, 4)):
        cx, r = width * rng.uniform(0.05, 0.95), width * rng.uniform(0.06, 0.13)
        cy = horizon - height * rng.uniform(0.05, 0.2)
        trunk = (np.abs(cols - cx) <= max(1.0, r / 5)) & (rows >= cy) & (rows < horizon + height * 0.06)
        canopy = ((cols - cx) / r) ** 2 + ((rows - cy) / (r * rng.uniform(0.9, 1.4))) ** 2 <= 1
        _paint(image, label, trunk, _jitter(rng, (90, 60, 35), 15), ADE20K_IDS['tree'], rng, 6)
        _paint(image, label, canopy, _jitter(rng, (40, 95, 40), 15), ADE20K_IDS['tree'], rng, 8)
        image[canopy] += (_blotches(rng, height, width, 3)[canopy][:, None] - 0.5) * 70

    # "Other" objects (ADE20K id 0, ignored in training and evaluation): cars on the road, signs.
    for _ in range(rng.integers(0, 3)):
        w, h = int(width * rng.uniform(0.08, 0.18)), int(height * rng.uniform(0.06, 0.12))
        x0 = int(rng.integers(0, max(1, width - w)))
        y0 = int(rng.integers(horizon, max(horizon + 1, height - h)))
        box = (cols >= x0) & (cols < x0 + w) & (rows >= y0) & (rows < y0 + h)
        _paint(image, label, box, rng.uniform(0, 255, 3), OTHER, rng, 6)

    image *= rng.uniform(0.8, 1.15)  # global exposure
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


def is_demo_ade20k(root):
    """Whether ``root`` already holds a complete set in this layout (every image has its annotation)."""
    for split in SPLITS:
        img_dir, ann_dir = osp.join(root, 'images', split), osp.join(root, 'annotations', split)
        if not (osp.isdir(img_dir) and osp.isdir(ann_dir)):
            return False
        stems = {osp.splitext(f)[0] for f in os.listdir(img_dir) if f.endswith('.jpg')}
        if not stems or stems != {osp.splitext(f)[0] for f in os.listdir(ann_dir) if f.endswith('.png')}:
            return False
    return True


def generate_demo_ade20k(root, num_train=64, num_val=16, size=(96, 128), seed=0, overwrite=False):
    """Write the demo set under ``root`` and return ``root``. Deterministic for a given seed.

    An existing complete set is kept unless ``overwrite``. The files are written to a temporary folder
    next to ``root`` and moved into place in one rename (:func:`.generator.write_atomically`), so concurrent
    callers (several processes, data loader workers) never see a half-written set.
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f'need at least one image per split, got num_train={num_train}, num_val={num_val}')
    height, width = size
    if height < 16 or width < 16:
        raise ValueError(f'size (H, W) must be at least 16x16 pixels, got {size}')
    root = osp.abspath(osp.expanduser(str(root)))
    if is_demo_ade20k(root) and not overwrite:
        return root
    if osp.exists(root) and not overwrite and os.listdir(root):
        raise FileExistsError(f'{root} exists, is not empty and is not a complete ADE20K-layout set; '
                              'remove it, pick another folder, or pass overwrite=True.')

    def build(staging):
        rng = np.random.default_rng(seed)
        for split, count in zip(SPLITS, (num_train, num_val)):
            os.makedirs(osp.join(staging, 'images', split))
            os.makedirs(osp.join(staging, 'annotations', split))
            for i in range(count):
                image, label = render_scene(rng, height, width)
                stem = f'demo_{i:05d}'
                cv2.imwrite(osp.join(staging, 'images', split, stem + '.jpg'), image[:, :, ::-1],
                            [cv2.IMWRITE_JPEG_QUALITY, 95])
                cv2.imwrite(osp.join(staging, 'annotations', split, stem + '.png'), label)

    # A failed rename is fine only if another writer left a full set.
    return write_atomically(root, '.demo_ade20k-', build, replace=overwrite, complete=is_demo_ade20k)


def main(argv=None):
    run_cli(argv, description='Write a synthetic ADE20K-layout segmentation set.', default_root='data/demo_ade20k',
            metavars=dict(size=('H', 'W')), generate=generate_demo_ade20k,
            report=lambda root, s: (f'Demo ADE20K set ({s["num_train"]} training / {s["num_val"]} validation '
                                    f'images, {s["size"][0]}x{s["size"][1]}) in {root}'))


if __name__ == '__main__':
    main()
