"""The detection demo's shapes, one per image, as a classification set in the ImageNet folder layout.

This is what the detection demo pretrains its backbone on (the paper's workflow at small scale: ImageNet
classification first, then detection fine-tuning from that checkpoint)::

    root/train/0_circle/000000.png ...     root/val/0_circle/000000.png ...
    root/meta.json                          the generator settings, to recognise the folder later

Each image is drawn like a :mod:`vmamba.demo.coco` image (same background, sizes, rotations, painter) but
holds a single shape, in a *random* colour: the label is the outline alone, so pretraining has to learn
shape, while the detection set's class colours are left for fine-tuning to pick up.

Command line::

    python -m vmamba.demo.shapes_cls data/demo_shapes_cls --train-per-class 160 --val-per-class 16
"""
import argparse
import json
import os
import os.path as osp
import shutil
import tempfile

import cv2
import numpy as np

from vmamba.demo import coco

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
    """Write the set into ``root`` (which must not exist yet) and return ``root``; deterministic by seed.

    Written into a temporary folder renamed into place, so concurrent callers never see half a set."""
    settings = dict(train_per_class=train_per_class, val_per_class=val_per_class, image_size=image_size, seed=seed)
    if min(train_per_class, val_per_class) < 1 or image_size < 16:
        raise ValueError(f'need at least one image per class and split and 16 px images, got {settings}')
    if osp.exists(root):
        raise FileExistsError(f'{root} already exists; generate_shapes_cls writes a new folder only.')
    parent = osp.dirname(osp.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.demo_shapes_cls-', dir=parent)
    try:
        streams = np.random.SeedSequence([seed, 7]).spawn(len(SPLITS))
        for split, per_class, stream in zip(SPLITS, (train_per_class, val_per_class), streams):
            rng = np.random.default_rng(stream)
            for label, folder in enumerate(class_folders()):
                os.makedirs(osp.join(tmp, split, folder))
                for i in range(per_class):
                    image = render_single(rng, label, image_size)
                    cv2.imwrite(osp.join(tmp, split, folder, f'{i:06d}.png'), image[..., ::-1])
        with open(osp.join(tmp, _META), 'w') as f:
            json.dump(dict(settings, classes=list(class_folders())), f, indent=1)
        os.rename(tmp, root)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not osp.exists(osp.join(root, _META)):  # not a lost race with another process: a real error
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def ensure_shapes_cls(root, **settings):
    """Generate the set into ``root`` unless it is there already with the same settings; refuse anything else."""
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise TypeError(f'unknown shapes classification settings {sorted(unknown)}; known: {sorted(DEFAULTS)}')
    settings = {**DEFAULTS, **settings}
    root = osp.abspath(osp.expanduser(str(root)))
    if not osp.exists(root):
        return generate_shapes_cls(root, **settings)
    meta = osp.join(root, _META)
    if not osp.isfile(meta):
        raise FileExistsError(f'{root} exists but is not a demo shapes classification set (no {_META}); '
                              'remove it or choose another data_root.')
    with open(meta) as f:
        found = json.load(f)
    found.pop('classes', None)
    if found != settings:
        raise FileExistsError(f'{root} holds a shapes set made with {found}, not {settings}; '
                              f'delete {root} to regenerate it.')
    return root


def main(argv=None):
    parser = argparse.ArgumentParser(description='Write the single-shape classification set (ImageNet layout).')
    parser.add_argument('root', nargs='?', default='data/demo_shapes_cls', help='output folder (must not exist)')
    for key, value in DEFAULTS.items():
        parser.add_argument(f'--{key.replace("_", "-")}', type=int, default=value)
    args = parser.parse_args(argv)
    settings = {k: getattr(args, k) for k in DEFAULTS}
    generate_shapes_cls(args.root, **settings)
    print(f'wrote {args.root}: {settings}')


if __name__ == '__main__':
    main()
