"""A small synthetic instance-segmentation set in the COCO format, for demos and CI (nothing to download).

Layout (what mmdet's ``CocoDataset`` and ``CocoMetric`` read)::

    root/annotations/instances_train.json     root/train/000000.png ...
    root/annotations/instances_val.json       root/val/000000.png ...
    root/demo_coco.json                       the generator settings, to recognise the folder later

Each image holds one to ``max_objects`` non-overlapping filled shapes, one instance each, on a dark, faintly
noisy gradient background. The four classes (:data:`CLASSES`) differ by outline and by colour band (each class
has its own hue, :data:`CLASS_HUES`, jittered per instance; size, position and rotation are random), so the
set is clean and high-contrast: a detector can get its boxes and masks tight within a few CPU-minutes, which
is what the demo is for. Every instance is stored as a COCO polygon (circles as 32-gons), with its box and
area derived from the same polygon the image was painted from, so masks, boxes and pixels agree exactly.

The output is a pure function of the settings (``seed`` included): the same call always writes the same
bytes. Generation goes through a temporary folder renamed into place (:mod:`.generator`), so several
processes (DDP ranks) may ask for the same set at once.

Command line::

    python -m vmamba.demo.coco data/demo_shapes --num-train 240 --num-val 32 --image-size 64
"""
import colorsys
import json
import math
import os
import os.path as osp

import cv2
import numpy as np

from vmamba.demo.generator import ensure_recorded, run_cli, write_new_set

__all__ = ['CLASSES', 'CLASS_HUES', 'SPLITS', 'DEFAULTS', 'render_image', 'paint_shape', 'background',
           'generate_demo_coco', 'ensure_demo_coco', 'ann_file', 'image_dir']

#: Category names; category ``id`` is the index + 1.
CLASSES = ('circle', 'square', 'triangle', 'star')
#: Hue (0..1) of each class's colour band: red circles, blue squares, yellow triangles, green stars.
CLASS_HUES = (0.0, 0.6, 0.15, 0.36)
SPLITS = ('train', 'val')
#: Default settings of :func:`generate_demo_coco`.
DEFAULTS = dict(num_train=240, num_val=32, image_size=64, max_objects=3, seed=0)  # the detection demo's set
#: Circumradius range of a shape, as a fraction of the image side.
RADIUS_RANGE = (0.16, 0.30)

_META = 'demo_coco.json'
#: Bumped whenever the same settings would draw other images; a folder written by another version is
#: recognised as different (and not silently reused).
_STYLE = 2


def ann_file(split):
    """Annotation file of ``split``, relative to the data root."""
    return f'annotations/instances_{split}.json'


def image_dir(split):
    """Image folder of ``split``, relative to the data root."""
    return f'{split}/'


def _outline(name, cx, cy, radius, angle):
    """Polygon (K, 2) of shape ``name`` centred at (cx, cy), circumradius ``radius``, rotated by ``angle``."""
    if name == 'circle':
        t = np.linspace(0, 2 * math.pi, 32, endpoint=False)
        r = np.full_like(t, radius)
    elif name == 'square':
        t = angle + np.arange(4) * math.pi / 2
        r = np.full_like(t, radius)
    elif name == 'triangle':
        t = angle + np.arange(3) * 2 * math.pi / 3
        r = np.full_like(t, radius)
    elif name == 'star':  # five points, inner radius 0.45 R
        t = angle + np.arange(10) * math.pi / 5
        r = np.where(np.arange(10) % 2 == 0, radius, 0.45 * radius)
    else:
        raise KeyError(f'unknown demo shape {name!r}; known: {CLASSES}')
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def background(rng, size):
    """A dark, low-saturation linear gradient with faint pixel noise (float RGB, (size, size, 3))."""
    a, b = (_hsv(rng.uniform(), rng.uniform(0, 0.3), rng.uniform(0.12, 0.42)) for _ in range(2))
    direction = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    t = (xs * math.cos(direction) + ys * math.sin(direction))
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    image = a * (1 - t[..., None]) + b * t[..., None]
    return image + rng.normal(0, 4, image.shape)


def _hsv(h, s, v):
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v)) * 255


def paint_shape(image, rng, label, cx, cy, radius, hue=None):
    """Paint one shape of class ``label`` into ``image`` (float RGB, in place); returns its polygon (K, 2).

    The rotation is random; the colour is bright and saturated, of hue ``hue`` (0..1), by default one drawn
    from the class's band (:data:`CLASS_HUES` +- 0.04)."""
    size_y, size_x = image.shape[:2]
    polygon = _outline(CLASSES[label], cx, cy, radius, rng.uniform(0, 2 * math.pi))
    mask = np.zeros((size_y, size_x), np.uint8)
    cv2.fillPoly(mask, [np.round(polygon * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    if hue is None:
        hue = CLASS_HUES[label] + rng.uniform(-0.04, 0.04)
    colour = _hsv(hue, rng.uniform(0.7, 1.0), rng.uniform(0.8, 1.0))
    inside = mask.astype(bool)
    image[inside] = colour + rng.normal(0, 4, (int(inside.sum()), 3))
    return polygon


def render_image(rng, size=128, max_objects=3):
    """One image and its instances: ``(rgb uint8 (size, size, 3), [(class index, polygon (K, 2)), ...])``.

    1 to ``max_objects`` shapes, circumradius :data:`RADIUS_RANGE` of the side, placed without overlap (by
    circumcircle) and fully inside the image. A shape that finds no free spot after a few tries is skipped.
    """
    image = background(rng, size)
    placed, instances = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            radius = rng.uniform(*RADIUS_RANGE) * size
            cx, cy = rng.uniform(radius + 1, size - radius - 1, 2)
            if all(math.hypot(cx - x, cy - y) > radius + r + 2 for x, y, r in placed):
                break
        else:
            continue
        label = int(rng.integers(len(CLASSES)))
        polygon = paint_shape(image, rng, label, cx, cy, radius)
        placed.append((cx, cy, radius))
        instances.append((label, polygon))
    return np.clip(image, 0, 255).astype(np.uint8), instances


def _polygon_area(polygon):
    x, y = polygon[:, 0], polygon[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _write_split(root, split, count, size, max_objects, rng):
    os.makedirs(osp.join(root, image_dir(split)))
    images, annotations = [], []
    for index in range(count):
        image, instances = render_image(rng, size, max_objects)
        file_name = f'{index:06d}.png'
        cv2.imwrite(osp.join(root, image_dir(split), file_name), image[..., ::-1])  # cv2 writes BGR
        images.append(dict(id=index + 1, file_name=file_name, height=size, width=size))
        for label, polygon in instances:
            x0, y0 = polygon.min(axis=0)
            x1, y1 = polygon.max(axis=0)
            annotations.append(dict(
                id=len(annotations) + 1, image_id=index + 1, category_id=label + 1, iscrowd=0,
                bbox=[round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                area=round(_polygon_area(polygon), 2),
                segmentation=[[round(float(v), 2) for v in polygon.reshape(-1)]]))
    categories = [dict(id=i + 1, name=name, supercategory='shape') for i, name in enumerate(CLASSES)]
    with open(osp.join(root, ann_file(split)), 'w') as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories,
                       info=dict(description=f'vmamba synthetic shapes, {split} split')), f)


def generate_demo_coco(root, num_train=DEFAULTS['num_train'], num_val=DEFAULTS['num_val'],
                       image_size=DEFAULTS['image_size'], max_objects=DEFAULTS['max_objects'],
                       seed=DEFAULTS['seed']):
    """Write the set into ``root`` (which must not exist yet) and return ``root``.

    The train and val splits come from independent random streams of ``seed``, so changing one split's
    size does not change the other split's images.
    """
    settings = dict(num_train=num_train, num_val=num_val, image_size=image_size, max_objects=max_objects,
                    seed=seed)

    def build(staging):
        os.makedirs(osp.join(staging, 'annotations'))
        streams = np.random.SeedSequence(seed).spawn(len(SPLITS))
        for split, count, stream in zip(SPLITS, (num_train, num_val), streams):
            _write_split(staging, split, count, image_size, max_objects, np.random.default_rng(stream))

    return write_new_set(root, 'generate_demo_coco', '.demo_coco-', build, _META,
                         dict(settings, classes=list(CLASSES), style=_STYLE))


def ensure_demo_coco(root, **settings):
    """Generate the set into ``root`` unless it is already there with the same settings.

    Raises if ``root`` exists but is something else (another demo setting, an older drawing style, or real
    data), rather than overwriting it.
    """
    return ensure_recorded(root, settings, DEFAULTS, generate_demo_coco, _META, 'demo COCO', style=_STYLE)


def main(argv=None):
    run_cli(argv, description='Write the synthetic COCO-format shapes set.', default_root='data/demo_shapes',
            root_help='output folder (must not exist)', generate=generate_demo_coco)


if __name__ == '__main__':
    main()
