"""Convert an official VMamba ImageNet checkpoint into an mmpretrain checkpoint for a classification config.

The configs load official files directly (``load_from`` / ``tools/test.py CONFIG OFFICIAL.pth``); convert
offline when another tool must read the file, e.g. mmpretrain's own ``init_model``/inferencers::

    python tools/convert_checkpoint.py configs/classification/vmamba_tiny_in1k.py \\
        checkpoints/vssm1_tiny_0230s_ckpt_epoch_264.pth checkpoints/vmamba_tiny_in1k_ema.pth [--weights raw]

The output is ``{'state_dict': ..., 'meta': {...}}`` holding only the picked weights (EMA by default), with
the ``ImageClassifier`` key names; a ``.safetensors`` output (or ``--format safetensors``) holds the same
tensors as a plain state dict, with the variant (and its settings), weights, source and config in its
metadata: a file that loads without unpickling anything, which every tool here accepts as a checkpoint.
The config's classifier is built and the converted weights are loaded into it strictly before anything is
written, so a file for the wrong variant fails here, with the reason. ``--trust-checkpoint`` reads a source
file that needs a full unpickle (see README, "torch >= 2.6 and checkpoints").
"""
import argparse
import importlib
import json
import os.path as osp

import vmamba  # noqa: F401  (first: it quiets setuptools' pkg_resources notice before mmengine is imported)
from mmengine.registry import init_default_scope

import vmamba.models  # noqa: F401  (registers VMamba; `import vmamba` also fixes torch.load for old files)
from vmamba import errors
from vmamba.engine.checkpointing import atomic_torch_save
from vmamba.models.checkpoint import check_state_dict_fits, load_checkpoint_file
from vmamba.models.checkpoint_file import SAFETENSORS_SUFFIX, add_trust_option, save_safetensors
from vmamba.tasks import adapters, config_check
from vmamba.tasks.classification import WEIGHTS, check_official_checkpoint, convert_official_checkpoint

#: The task whose checkpoints this tool writes.
CLASSIFICATION = adapters.lookup('mmpretrain')
FORMATS = ('pth', 'safetensors')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Convert an official VMamba classification checkpoint.')
    parser.add_argument('config', help='the classification config of the checkpoint\'s variant')
    parser.add_argument('src', help='official checkpoint (.pth)')
    parser.add_argument('dst', help='output file')
    parser.add_argument('--weights', choices=WEIGHTS, default='ema',
                        help='EMA (default; the released accuracy of all but vanilla-tiny) or raw weights')
    parser.add_argument('--format', choices=FORMATS,
                        help='output format (default: safetensors for a .safetensors output, else pth)')
    add_trust_option(parser)
    return parser.parse_args(argv)


def output_format(dst, fmt=None):
    """The format to write ``dst`` in: ``fmt``, else from its extension."""
    return fmt or ('safetensors' if str(dst).endswith(SAFETENSORS_SUFFIX) else 'pth')


def convert(config, src, dst, weights='ema', fmt=None):
    """Convert ``src`` for ``config`` and save it to ``dst`` (``fmt``: pth or safetensors, default by the
    extension); returns ``{'state_dict', 'meta'}``."""
    folder = osp.dirname(osp.abspath(dst))
    if not osp.isdir(folder):
        raise errors.ToolError(f'The output folder {folder} does not exist; create it first '
                               f'(mkdir -p {folder}) or write elsewhere.')
    cfg = config_check.load_config(config)
    if adapters.lookup(cfg) is not CLASSIFICATION:
        raise errors.ToolError(f'{config} is a {cfg.get("default_scope")} config; the converter writes '
                               'classification checkpoints: give it a config under configs/classification/.')
    config_check.require(cfg, config)
    checkpoint = load_checkpoint_file(src)
    other = 'raw' if weights == 'ema' else 'ema'
    check_official_checkpoint(checkpoint, weights, src, switch=f'--weights {other}')
    init_default_scope(CLASSIFICATION.scope)
    model = importlib.import_module(CLASSIFICATION.registry).MODELS.build(cfg.model)
    converted = convert_official_checkpoint(checkpoint, weights)
    state_dict = converted['state_dict']
    check_state_dict_fits(model, state_dict, f'official checkpoint {osp.basename(src)}')
    model.load_state_dict(state_dict, strict=True)
    meta = dict(source=osp.abspath(src), weights=weights, config=osp.abspath(config))
    out = {'state_dict': state_dict, 'meta': meta}
    if output_format(dst, fmt) == 'safetensors':
        backbone = model.backbone
        save_safetensors(state_dict, dst, dict(meta, variant=backbone.arch_name, model='ImageClassifier',
                                               arch=json.dumps(backbone.arch_settings, sort_keys=True, default=str)))
    else:
        atomic_torch_save(out, dst)
    return out


def main(argv=None):
    args = parse_args(argv)
    with errors.reported():
        if not osp.isfile(args.src):
            raise errors.ToolError(f'Checkpoint file not found: {args.src!r}.')
        convert(args.config, args.src, args.dst, args.weights, args.format)
    print(f'Wrote the {args.weights} weights of {args.src} for {args.config} to {args.dst} '
          f'({output_format(args.dst, args.format)})')


if __name__ == '__main__':
    main()
