"""Evaluate a checkpoint with any VMamba config: detection (mmdet), segmentation (mmseg) or classification
(mmpretrain); the config's ``default_scope`` picks the codebase. Usage::

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE] [--show-dir DIR] [--tta]
                                           [--cfg-options key=value ...] [--launcher {none,pytorch,slurm,mpi}]

``--out``: detection/classification dump the predictions to a .pkl file; segmentation (as mmseg's own
tool) writes the predicted maps into the directory FILE. ``--tta`` uses the config's ``tta_model`` and
``tta_pipeline``, or a flip TTA for detection and classification configs that define none.

The checkpoint must fit the config's model exactly (missing, unexpected or mis-shaped keys are listed and
the tool exits with status 1); ``--partial`` loads what fits instead (mmengine's behaviour, with warnings).
CHECKPOINT may be a ``.pth``, a ``.safetensors`` file or a URL; a file that would need a full unpickle (which
can run code) is refused unless ``--trust-checkpoint`` is given.
"""
import argparse
import os
import os.path as osp

import vmamba  # noqa: F401  (first: it quiets setuptools' pkg_resources notice before mmengine is imported)
from mmengine.config import DictAction

import vmamba.models  # noqa: F401  (registers the VMamba backbone; `import vmamba` fixes checkpoint loading)
from vmamba import errors
from vmamba.engine import exact_resume, strict_loading
from vmamba.models.checkpoint_file import add_trust_option
from vmamba.tasks import config_check, config_transforms, data_checks, distributed, eval_options
from vmamba.tasks.runner import build_runner


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a VMamba model.')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where the metrics log goes (default: ./work_dirs/<config name>)')
    parser.add_argument('--out', help='dump predictions: a .pkl file (a directory for segmentation)')
    parser.add_argument('--show', action='store_true', help='show the predictions in a window')
    parser.add_argument('--show-dir', help='save images painted with the predictions under the work dir/DIR')
    parser.add_argument('--wait-time', type=float, default=2, help='seconds each shown image stays up')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation')
    parser.add_argument('--partial', action='store_true',
                        help='load a checkpoint that fits the model only in part (default: it must fit exactly)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config entries')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher (pytorch = torchrun)')
    add_trust_option(parser)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def build_config(args):
    """Load the config and fold the command line into it."""
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        raise errors.ToolError(f'checkpoint not found: {args.checkpoint!r}')
    cfg = config_check.load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    config_transforms.default_work_dir(cfg, args.config, args.work_dir)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        eval_options.apply_show(cfg, args.show, args.show_dir, args.wait_time)
    if args.tta:
        eval_options.apply_tta(cfg)
    if args.out:
        eval_options.apply_out(cfg, args.out)
    config_transforms.apply_scope_defaults(cfg)
    config_transforms.fix_dataloaders(cfg)
    return cfg


def main(argv=None):
    args = parse_args(argv)
    config_transforms.setup_dynamo_cache()
    with errors.reported():
        cfg = build_config(args)
        config_check.require(cfg, args.config)
        data_checks.check_data(cfg, args.config, ['test_dataloader'])
        if not args.partial:
            strict_loading.add_strict_loading(cfg, args.checkpoint)
        exact_resume.track_data_errors(cfg, ['test_dataloader'])
        distributed.setup_distributed(cfg)
        runner = build_runner(cfg)
        if args.out:
            eval_options.add_dump_results(runner, cfg, args.out)
        return runner.test()


if __name__ == '__main__':
    main()
