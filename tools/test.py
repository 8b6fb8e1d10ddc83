"""Evaluate a checkpoint with any VMamba config: detection (mmdet), segmentation (mmseg) or classification
(mmpretrain); the config's ``default_scope`` picks the codebase. Usage::

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE] [--show-dir DIR] [--tta]
                                           [--cfg-options key=value ...] [--launcher {none,pytorch,slurm,mpi}]

``--out``: detection/classification dump the predictions to a .pkl file; segmentation (as mmseg's own
tool) writes the predicted maps into the directory FILE. ``--tta`` uses the config's ``tta_model`` and
``tta_pipeline``, or a flip TTA for detection and classification configs that define none.
"""
import argparse
import os
import os.path as osp
import sys

import vmamba  # noqa: F401  (first: it quiets setuptools' pkg_resources notice before mmengine is imported)
from mmengine.config import Config, DictAction

import vmamba.models  # noqa: F401  (registers the VMamba backbone; `import vmamba` fixes checkpoint loading)
from vmamba.tasks import common


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
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config entries')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher (pytorch = torchrun)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def build_config(args):
    """Load the config and fold the command line into it."""
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        raise common.ToolError(f'checkpoint not found: {args.checkpoint!r}')
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    common.default_work_dir(cfg, args.config, args.work_dir)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        common.apply_show(cfg, args.show, args.show_dir, args.wait_time)
    if args.tta:
        common.apply_tta(cfg)
    if args.out:
        common.apply_out(cfg, args.out)
    common.apply_scope_defaults(cfg)
    common.fix_dataloaders(cfg)
    return cfg


def main(argv=None):
    args = parse_args(argv)
    common.setup_dynamo_cache()
    try:
        cfg = build_config(args)
        common.check_data(cfg, args.config, ['test_dataloader'])
        common.setup_distributed(cfg)
        runner = common.build_runner(cfg)
        if args.out:
            common.add_dump_results(runner, cfg, args.out)
    except common.ToolError as err:
        sys.exit(f'error: {err}')
    return runner.test()


if __name__ == '__main__':
    main()
