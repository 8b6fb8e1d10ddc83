"""Train any VMamba config: detection (mmdet), segmentation (mmseg) or classification (mmpretrain).

The config's ``default_scope`` picks the codebase; this script imports none of them itself. Usage::

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--auto-scale-lr]
                                 [--cfg-options key=value ...] [--launcher {none,pytorch,slurm,mpi}]
    torchrun --nproc_per_node=N tools/train.py CONFIG --launcher pytorch   # also on a CPU-only machine

``--resume`` alone continues from the newest intact checkpoint in the work dir; ``--resume CKPT`` from CKPT.
What the tool adds to the config so that training loses nothing (each in its module of ``vmamba/tasks``):
crash-safe checkpoints (``checkpointing``), a checked resume (``resume``), data and random state that are a
function of (seed, iteration) so that a resumed run continues exactly, with or without worker processes
(``vmamba.engine.exact_resume``, with its ``StepSeedHook``), and a stop at the first non-finite loss (``nan_guard``).
"""
import argparse
import os
import sys

import vmamba  # noqa: F401  (first: it quiets setuptools' pkg_resources notice before mmengine is imported)
from mmengine.config import DictAction

import vmamba.models  # noqa: F401  (registers the VMamba backbone; `import vmamba` fixes checkpoint loading)
from vmamba import errors
from vmamba.engine import checkpointing, exact_resume, nan_guard, preemption, resume, resume_changes, workdir_lock
from vmamba.models.checkpoint_file import add_trust_option
from vmamba.tasks import config_check, config_transforms, data_checks, data_quality, distributed
from vmamba.tasks.runner import build_runner


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a VMamba model (detection, segmentation or classification).')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go (default: ./work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto', metavar='CKPT',
                        help='resume from CKPT, or without a value from the latest checkpoint in the work dir')
    parser.add_argument('--resume-changed', action='store_true',
                        help='resume although the config differs from the checkpoint\'s run (learning rate, '
                             'schedule, batch size, world size, model), with the new values')
    parser.add_argument('--skip-bad-data', action='store_true',
                        help='train without the samples the data check finds broken (listed), instead of stopping '
                             '(also: skip_bad_data=True in the config)')
    parser.add_argument('--amp', action='store_true', help='mixed-precision training (needs CUDA)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the LR by the actual total batch / auto_scale_lr.base_batch_size')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. train_dataloader.batch_size=4 '
                             'model.backbone.init_cfg=None "param_scheduler[1].milestones=[8,11]"')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher (pytorch = torchrun)')
    parser.add_argument('--max-skipped-steps', type=int, default=None, metavar='N',
                        help='tolerate N consecutive non-finite losses before stopping (for mixed precision, '
                             'whose loss scaler skips those steps; default 0: stop at the first)')
    parser.add_argument('--dist-timeout', type=float, default=None, metavar='SECONDS',
                        help='how long the ranks wait in a collective for one that stalls before the job stops '
                             f'(default: env_cfg.dist_cfg.timeout, else {distributed.DEFAULT_TIMEOUT_S})')
    add_trust_option(parser)
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK in the environment instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    if args.resume is None and restarted():
        args.resume = 'auto'  # a requeued or elastically restarted job continues from its newest checkpoint
    return args


def restarted():
    """True in a job that Slurm requeued or torchrun restarted (they count restarts in the environment)."""
    return any(int(os.environ.get(k, '0') or 0) > 0 for k in ('SLURM_RESTART_COUNT', 'TORCHELASTIC_RESTART_COUNT'))


def build_config(args):
    """Load the config and fold the command line into it."""
    cfg = config_check.load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    config_transforms.default_work_dir(cfg, args.config, args.work_dir)
    if args.amp:
        config_transforms.apply_amp(cfg)
    if args.auto_scale_lr:
        config_transforms.apply_auto_scale_lr(cfg)
    config_transforms.apply_resume(cfg, args.resume)
    exact_resume.add_step_seed_hook(cfg)  # random state per iteration, so that --resume continues exactly
    config_transforms.apply_scope_defaults(cfg)
    config_transforms.fix_dataloaders(cfg)
    return cfg


def make_reliable(cfg, args):
    """What makes a run lose nothing (after check_resume, which may fix the seed from the checkpoint)."""
    checkpointing.use_safe_checkpoints(cfg)
    nan_guard.add_nan_guard(cfg, args.max_skipped_steps)
    exact_resume.make_resume_exact(cfg)
    exact_resume.track_data_errors(cfg, ['val_dataloader'])
    preemption.add_preemption_hook(cfg)  # SIGTERM/SIGINT/SIGUSR1: save this iteration, exit 75 (requeue)
    distributed.add_step_beacon(cfg)
    config_check.fit_schedulers_to_run(cfg)


def main(argv=None):
    args = parse_args(argv)
    config_transforms.setup_dynamo_cache()
    with errors.reported():
        cfg = build_config(args)
        config_check.require(cfg, args.config)
        loaders = ['train_dataloader'] + (['val_dataloader'] if cfg.get('val_cfg') else [])
        data_checks.check_data(cfg, args.config, loaders)
        skip = args.skip_bad_data or bool(cfg.get('skip_bad_data'))
        data_quality.enforce(data_quality.check_datasets(cfg, loaders, skip=skip), skip,
                             log=lambda text: print(text, file=sys.stderr))
        data_checks.check_pretrained(cfg)
        own_seed = (cfg.get('randomness') or {}).get('seed')
        ckpt = resume.check_resume(cfg)
        make_reliable(cfg, args)
        distributed.setup_distributed(cfg, args.dist_timeout)  # its CPU SyncBN -> BN is in the dumped config too
        if ckpt is not None:  # after make_reliable: the checkpoint's config was dumped after it too
            resume_changes.check_changes(cfg, ckpt, cfg.load_from, own_seed, args.resume_changed,
                                         log=lambda line: print(line, file=sys.stderr))
        resume_changes.add_resume_changes_hook(cfg, apply=args.resume_changed)
        workdir_lock.lock_work_dir(cfg.work_dir)  # one run per work dir, before anything is written there
        try:
            checkpointing.remove_leftovers(cfg.work_dir)
            runner = build_runner(cfg)
            keep_run_config(runner)
            train(runner, cfg)
        finally:
            workdir_lock.release(cfg.work_dir)


def keep_run_config(runner):
    """A copy of the config in the run's own log folder: mmengine dumps it to the top of the work dir, where the
    next run in that dir replaces it."""
    from mmengine.dist import is_main_process
    if is_main_process():
        runner.cfg.dump(os.path.join(runner.log_dir, os.path.basename(runner.cfg.filename or 'config.py')))


def train(runner, cfg):
    """``runner.train()``; a signal ends it with exit status 75, a stalled rank with one line."""
    try:
        runner.train()
    except preemption.Preempted:  # the hook has logged what it saved and how to resume
        distributed.finish_distributed()  # no rank leaves while rank 0 still writes the checkpoint
        sys.exit(preemption.REQUEUE_EXIT)
    except (TypeError, KeyError) as err:  # the optimizer and schedulers are built here, from the config
        explained = config_check.explain_build_error(err, cfg)
        if explained is None:
            raise
        raise explained from err
    except RuntimeError as err:
        explained = distributed.explain_timeout(err, cfg, runner.iter + 1)
        if explained is None:
            raise
        raise explained from err
    distributed.finish_distributed()


if __name__ == '__main__':
    main()
