"""The detection demo's shapes, one per image, as a classification set in the ImageNet folder layout.

This is what the detection demo pretrains its backbone on (the paper's workflow at small scale: ImageNet
classification first, then detection fine-tuning from that checkpoint)::

    root/train/0_circle/000000.png ...     root/val/0_circle/000000.png ...
    root/meta.json                          the generator settings, to recognise the folder later

Each image is drawn like a :mod:`vmamba.demo.coco` image (same background, sizes, rotations, painter) but
holds a single shape, in a *random* colour: the label is the outline alone, so pretraining has to learn
shape, while the detection set's class colours are left for fine-tuning to pick up. Like every demo set it
is written into a temporary folder renamed into place (:mod:`.generator`), so concurrent callers never see
half a set.

Command line::

    python -m vmamba.demo.shapes_cls data/demo_shapes_cls --train-per-class 160 --val-per-class 16
"""
import os
import os.path as osp

import cv2
import numpy as np

from vmamba.demo import coco
from vmamba.demo.generator import ensure_recorded, run_cli, write_new_set

__all__ = ['DEFAULTS', 'class_folders', 'render_single', 'generate_shapes_cls', 'ensure_shapes_cls']

#: Default settings of :func:`generate_shapes_cls`.
DEFAULTS = dict(train_per_class=160, val_per_class=16, image_size=64, seed=0)
SPLITS = ('train', 'val')
_META = 'meta.json'


def class_folders():
    """Folder names in label order (they sort in class order): ``0_circle``, ``1_square``, ..."""
    return tuple(f'{k}_{name}' for k, name in enumerate(coco.CLASSES))


def render_single(rng, label, size=64):
    """One RGB uint8 image (size, size, 3) holding one shape of class ``label`` in a random colour."""
    image = coco.background(rng, size)
    radius = rng.uniform(*coco.RADIUS_RANGE) * size
    cx, cy = rng.uniform(radius + 1, size - radius - 1, 2)
    coco.paint_shape(image, rng, label, cx, cy, radius, hue=rng.uniform())
    return np.clip(image, 0, 255).astype(np.uint8)


def generate_shapes_cls(root, train_per_class=DEFAULTS['train_per_class'], val_per_class=DEFAULTS['val_per_class'],
                        image_size=DEFAULTS['image_size'], seed=DEFAULTS['seed']):
    """Write the set into ``root`` (which must not exist yet) and return ``root``; deterministic by seed."""
    settings = dict(train_per_class=train_per_class, val_per_class=val_per_class, image_size=image_size, seed=seed)
    if min(train_per_class, val_per_class) < 1 or image_size < 16:
        raise ValueError(f'need at least one image per class and split and 16 px images, got {settings}')

    def build(staging):
        streams = np.random.SeedSequence([seed, 7]).spawn(len(SPLITS))
        for split, per_class, stream in zip(SPLITS, (train_per_class, val_per_class), streams):
            rng = np.random.default_rng(stream)
            for label, folder in enumerate(class_folders()):
                os.makedirs(osp.join(staging, split, folder))
                for i in range(per_class):
                    image = render_single(rng, label, image_size)
                    cv2.imwrite(osp.join(staging, split, folder, f'{i:06d}.png'), image[..., ::-1])

    return write_new_set(root, 'generate_shapes_cls', '.demo_shapes_cls-', build, _META,
                         dict(settings, classes=list(class_folders())))


def ensure_shapes_cls(root, **settings):
    """Generate the set into ``root`` unless it is there already with the same settings; refuse anything else."""
    root = osp.abspath(osp.expanduser(str(root)))
    return ensure_recorded(root, settings, DEFAULTS, generate_shapes_cls, _META, 'demo shapes classification')


def main(argv=None):
    run_cli(argv, description='Write the single-shape classification set (ImageNet layout).',
            default_root='data/demo_shapes_cls', root_help='output folder (must not exist)',
            generate=generate_shapes_cls)


if __name__ == '__main__':
    main()
