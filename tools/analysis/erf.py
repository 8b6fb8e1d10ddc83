"""Effective receptive field maps (the paper's Figure 5) for VMamba and a baseline, saved as one PNG.

Each map is the gradient of the central pixel of the last backbone feature map w.r.t. the input, rectified,
summed over colour channels and averaged over images, shown on a log scale (see vmamba/analysis/erf.py).
Weights are random unless ``--checkpoint NAME=PATH`` gives a file (an official VMamba .pth for a variant
name, an OpenMMLab checkpoint for a config or baseline): the paper shows both, before and after training.

    # the paper's setting: 50 ImageNet val images at 1024x1024, trained weights
    python tools/analysis/erf.py tiny resnet50 --images data/imagenet/val --num-images 50 --size 1024 \\
        --checkpoint tiny=checkpoints/vssm1_tiny_0230s_ckpt_epoch_264.pth --checkpoint-key model_ema \\
        --checkpoint resnet50=checkpoints/resnet50_8xb32_in1k_20210831-ea4938fc.pth --out erf_trained.png
    # (--trust-checkpoint: a file that needs a full unpickle, which can run code; files you trust only)
    # random weights, synthetic noise images, small: a quick look on CPU
    python tools/analysis/erf.py tiny resnet50 --size 256 --num-images 4 --out erf_random.png
"""
import argparse
import json
import os.path as osp
import sys

import numpy as np
import torch

from vmamba import errors
from vmamba.analysis import SpecError, build_subject
from vmamba.analysis.erf import area_ratios, average_erf, load_images, save_erf_figure, synthetic_images
from vmamba.models.checkpoint_file import add_trust_option


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('models', nargs='*', default=['tiny', 'resnet50'],
                        help='variant names, baseline names or config files (default: tiny resnet50)')
    parser.add_argument('--checkpoint', action='append', default=[], metavar='NAME=PATH',
                        help='weights for one of the models (repeatable)')
    parser.add_argument('--checkpoint-key', help="entry of official VMamba files: 'model' or 'model_ema'")
    parser.add_argument('--images', help='folder of images (searched recursively); default: synthetic noise')
    parser.add_argument('--num-images', type=int, default=50)
    parser.add_argument('--size', type=int, default=1024, help='square input size (the paper: 1024)')
    parser.add_argument('--batch', type=int, default=1, help='images per backward pass')
    parser.add_argument('--decades', type=float, default=3.0, help='log-scale range shown, in decades')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--out', default='erf.png', help='PNG path; the raw maps go to the same name .npz')
    add_trust_option(parser)
    args = parser.parse_args(argv)
    checkpoints = {}
    for item in args.checkpoint:
        name, sep, path = item.partition('=')
        if not sep or name not in args.models:
            parser.error(f'--checkpoint {item!r}: expected NAME=PATH with NAME one of {args.models}')
        checkpoints[name] = path
    args.checkpoints = checkpoints
    return args


def main(argv=None):
    args = parse_args(argv)
    maps, titles, summary = {}, {}, {}
    for spec in args.models:
        try:
            with errors.reported():  # an unreadable or refused checkpoint: one line
                subject = build_subject(spec, checkpoint=args.checkpoints.get(spec),
                                        checkpoint_key=args.checkpoint_key, device=args.device)
        except SpecError as err:
            sys.exit(f'error: {err}')
        subject.model.eval()
        if args.images:
            batches = load_images(args.images, args.num_images, args.size, args.batch)
        else:
            batches = synthetic_images(args.num_images, args.size, args.batch)
        erf, used = average_erf(subject.features, (b.to(args.device) for b in batches))
        ratios = area_ratios(erf)
        weights = 'trained' if spec in args.checkpoints else 'random init'
        maps[subject.name] = erf
        titles[subject.name] = f'{subject.name} ({weights})'
        summary[subject.name] = dict(weights=weights, images=used, area_ratio={str(k): v for k, v in ratios.items()})
        print(f'{subject.name} ({weights}, {used} images): high-contribution area ratio '
              + ', '.join(f't={t:g}: {r:.3f}' for t, r in ratios.items()), flush=True)
        del subject
    save_erf_figure(maps, args.out, decades=args.decades, titles=titles)
    stem = osp.splitext(args.out)[0]
    np.savez(stem + '.npz', **maps)
    with open(stem + '.json', 'w') as f:
        json.dump(dict(size=args.size, images=args.images or 'synthetic', models=summary), f, indent=1)
    print(f'wrote {args.out}, {stem}.npz, {stem}.json')
    return maps, summary


if __name__ == '__main__':
    main()
