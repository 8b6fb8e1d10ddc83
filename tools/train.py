"""Train any VMamba config: detection (mmdet), segmentation (mmseg) or classification (mmpretrain).

The config's ``default_scope`` picks the codebase; this script imports none of them itself. Usage::

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--auto-scale-lr]
                                 [--cfg-options key=value ...] [--launcher {none,pytorch,slurm,mpi}]
    torchrun --nproc_per_node=N tools/train.py CONFIG --launcher pytorch   # also on a CPU-only machine

``--resume`` alone continues from the latest checkpoint in the work dir; ``--resume CKPT`` from CKPT. The
random state is re-seeded from (seed, iteration) every iteration (``StepSeedHook``), so a resumed run
draws the same augmentations and samples as an uninterrupted one (with ``num_workers=0``).
"""
import argparse
import os
import sys

import vmamba  # noqa: F401  (first: it quiets setuptools' pkg_resources notice before mmengine is imported)
from mmengine.config import Config, DictAction

import vmamba.models  # noqa: F401  (registers the VMamba backbone; `import vmamba` fixes checkpoint loading)
from vmamba.tasks import common


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a VMamba model (detection, segmentation or classification).')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go (default: ./work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto', metavar='CKPT',
                        help='resume from CKPT, or without a value from the latest checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true', help='mixed-precision training (needs CUDA)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the LR by the actual total batch / auto_scale_lr.base_batch_size')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. train_dataloader.batch_size=4 '
                             'model.backbone.init_cfg=None "param_scheduler[1].milestones=[8,11]"')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher (pytorch = torchrun)')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK in the environment instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def build_config(args):
    """Load the config and fold the command line into it."""
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    common.default_work_dir(cfg, args.config, args.work_dir)
    if args.amp:
        common.apply_amp(cfg)
    if args.auto_scale_lr:
        common.apply_auto_scale_lr(cfg)
    common.apply_resume(cfg, args.resume)
    common.add_step_seed_hook(cfg)  # random state per iteration, so that --resume continues exactly
    common.apply_scope_defaults(cfg)
    common.fix_dataloaders(cfg)
    return cfg


def main(argv=None):
    args = parse_args(argv)
    common.setup_dynamo_cache()
    try:
        cfg = build_config(args)
        loaders = ['train_dataloader'] + (['val_dataloader'] if cfg.get('val_cfg') else [])
        common.check_data(cfg, args.config, loaders)
        common.check_pretrained(cfg)
        common.setup_distributed(cfg)
    except common.ToolError as err:
        sys.exit(f'error: {err}')
    runner = common.build_runner(cfg)
    runner.train()


if __name__ == '__main__':
    main()
