"""The README's main job: what VMamba-T is, then VMamba pretrained and fine-tuned for detection on the CPU.

    python tools/demo.py                        # model summary, then Mask R-CNN + VMamba trained and evaluated
    python tools/demo.py --pretrain             # first pretrain the backbone on single shapes, then fine-tune
    python tools/demo.py --seed 1               # another training seed (same data)
    python tools/demo.py --task segmentation    # the UperNet demo; --task classification: the classifier demo
    python tools/demo.py --no-train             # the model summary only
    python tools/demo.py --epochs 2 --work-dir /tmp/demo --cfg-options train_dataloader.batch_size=2

Detection runs configs/detection/maskrcnn_vmamba_tiny_demo.py (what tools/train.py runs): Mask R-CNN + the
demos' small VMamba (vmamba.demo.DEMO_ARCH) from scratch on images of synthetic shapes (data/demo_shapes/, made
on first use), evaluated with mmdet's CocoMetric after every epoch. ``--pretrain`` first runs the paper's
workflow at toy scale: configs/classification/vmamba_shapes_pretrain_demo.py classifies single shapes (the
"ImageNet pretraining"), and the detector starts from that checkpoint through
``init_cfg=dict(type='Pretrained', ...)``. (At this budget the pretraining does not help; see docs/detection.md.)
The console gets one line per epoch with an ETA (mmengine's full log goes to the log file), then a table of the
results and the paths of the pictures (predictions.png, curves.png) and checkpoints. Paths are relative to the
current directory. ``--cfg-options`` edits the main config (detection: step 2).
"""
import argparse
import contextlib
import logging
import os
import os.path as osp
import sys
import time

import vmamba  # noqa: F401  (first: it quiets setuptools' pkg_resources notice before mmengine is imported)
import torch
from mmengine.config import Config, DictAction

from vmamba.models import VMamba, VSSM
from vmamba.engine import checkpointing, exact_resume, nan_guard
from vmamba.errors import ToolError
from vmamba.tasks import config_transforms
from vmamba.tasks.runner import build_runner

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = {
    'detection': osp.join(REPO, 'configs', 'detection', 'maskrcnn_vmamba_tiny_demo.py'),
    'segmentation': osp.join(REPO, 'configs', 'segmentation', 'upernet_vmamba_tiny_ade20k_demo.py'),
    'classification': osp.join(REPO, 'configs', 'classification', 'vmamba_mini_demo.py'),
}
PRETRAIN_CONFIG = osp.join(REPO, 'configs', 'classification', 'vmamba_shapes_pretrain_demo.py')
DEMO_CONFIG = CONFIGS['detection']
#: The rows of the detection result table: (name, CocoMetric key prefix).
DETECTION_ROWS = [('box', 'coco/bbox_'), ('mask', 'coco/segm_')]


def describe_model():
    model = VSSM(arch='tiny').eval()
    n_params = sum(p.numel() for p in model.parameters())
    print(f'VMamba-T (tiny_s1l8) classifier: {n_params:,} parameters')
    backbone = VMamba(arch='tiny').eval()
    with torch.no_grad():
        x = torch.randn(1, 3, 224, 224)
        print('logits:', tuple(model(x).shape))
        for i, feat in enumerate(backbone(x)):
            print(f'stage {i} feature map: {tuple(feat.shape)}')


def _shown(path):
    rel = osp.relpath(path)
    return path if rel.startswith('..') else rel


def build_config(config, work_dir=None, epochs=None, seed=None, cfg_options=None):
    """The demo config as tools/train.py would build it, with the demo's overrides."""
    cfg = Config.fromfile(config)
    if epochs is not None:
        if 'max_epochs' not in cfg.train_cfg:
            raise ToolError(f'--epochs: {osp.basename(config)} counts iterations, not epochs; use '
                                   f'--cfg-options train_cfg.max_iters=N')
        cfg.train_cfg.max_epochs = epochs
        for scheduler in cfg.param_scheduler:  # the cosine decay ends with the run
            if scheduler.get('type') == 'CosineAnnealingLR' and scheduler.get('by_epoch', True):
                scheduler.end = scheduler.T_max = epochs
    if seed is not None:
        cfg.randomness = dict(cfg.get('randomness') or {}, seed=seed)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.launcher = 'none'
    config_transforms.default_work_dir(cfg, config, work_dir)
    exact_resume.add_step_seed_hook(cfg)
    config_transforms.fix_dataloaders(cfg)
    checkpointing.use_safe_checkpoints(cfg)  # crash-safe checkpoints and the NaN stop, as tools/train.py has
    nan_guard.add_nan_guard(cfg, None)
    return cfg


def run(cfg, title):
    """Train ``cfg`` with one console line per epoch; returns (last validation metrics, runner, seconds)."""
    from vmamba.demo.hooks import DemoProgressHook, DemoVisHook
    print(f'\n== {title} ==', flush=True)
    cfg.log_level = 'WARNING'  # the console shows warnings and the progress lines; the log file gets INFO
    runner = build_runner(cfg)
    runner.logger.setLevel(logging.INFO)
    for handler in runner.logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.INFO)
    progress = DemoProgressHook(stream=sys.stdout)
    runner.register_hook(progress)
    start = time.time()
    # pycocotools prints its loading notes and evaluation tables; they go to the log folder instead.
    with open(osp.join(runner.log_dir, 'stdout.txt'), 'w') as chatter, contextlib.redirect_stdout(chatter):
        runner.train()
    vis = next((h for h in runner.hooks if isinstance(h, DemoVisHook)), None)
    runner.demo_pictures = dict(vis.paths) if vis else {}
    return progress.last_metrics, runner, time.time() - start


def _last_checkpoint(work_dir):
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        raise ToolError(f'no checkpoint was written to {work_dir}')
    with open(pointer) as f:
        return f.read().strip()


def pretrain(work_dir, seed=None):
    """Step 1: the backbone learns single shapes; returns (checkpoint path, top-1 %, seconds)."""
    cfg = build_config(PRETRAIN_CONFIG, work_dir, seed=seed)
    metrics, runner, seconds = run(cfg, f'Step 1: pretrain the backbone on single shapes '
                                        f'({cfg.train_dataloader.dataset.data_root}, made on first use)')
    return _last_checkpoint(cfg.work_dir), metrics.get('accuracy/top1', float('nan')), seconds, runner


def _table(task, metrics, cfg_hooks=()):
    rows = []
    if task == 'detection':
        rows.append(f'{"":6}{"mAP":>8}{"mAP@0.5":>10}{"mAP@0.75":>10}')
        for name, prefix in DETECTION_ROWS:
            values = [metrics.get(f'{prefix}mAP{suffix}', float('nan')) for suffix in ('', '_50', '_75')]
            rows.append(f'{name:6}' + ''.join(f'{v:{w}.3f}' for v, w in zip(values, (8, 10, 10))))
    elif task == 'segmentation':
        rows.append(f'mIoU {metrics.get("mIoU", float("nan")):.2f} %   mAcc {metrics.get("mAcc", float("nan")):.2f} %   '
                    f'aAcc {metrics.get("aAcc", float("nan")):.2f} %')
    else:
        rows.append(f'top-1 {metrics.get("accuracy/top1", float("nan")):.1f} %' +
                    (' (EMA weights; the raw ones are in the log)' if 'VMambaEMAHook' in str(cfg_hooks) else ''))
    return rows


def train_demo(task='detection', work_dir=None, epochs=None, seed=None, cfg_options=None, pretrained=False):
    """Run the demo of ``task`` and print its summary. Returns the last validation metrics of the main run."""
    start = time.time()
    config = CONFIGS[task]
    stem = osp.splitext(osp.basename(config))[0]
    main_dir = work_dir or osp.join('work_dirs', stem)
    timings = []
    cfg = build_config(config, main_dir, epochs, seed, cfg_options)
    if pretrained and task != 'detection':
        raise ToolError('--pretrain is for the detection demo (--task detection)')
    if pretrained:
        pre_dir = osp.join(main_dir, 'pretrain')
        checkpoint, top1, seconds, pre_runner = pretrain(pre_dir, seed)
        print(f'  single-shape top-1 {top1:.1f} %; backbone checkpoint {_shown(checkpoint)}')
        timings.append(('pretraining', seconds))
        cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')
    data_root = cfg.train_dataloader.dataset.get('data_root')
    init = cfg.model.get('backbone', {}).get('init_cfg') if 'model' in cfg else None
    origin = 'from the step 1 checkpoint' if init and init.get('type') == 'Pretrained' else 'from scratch'
    titles = {'detection': f'{"Step 2: " if pretrained else ""}Mask R-CNN + VMamba, backbone {origin}, on '
                           f'several shapes per image ({data_root}, made on first use)',
              'segmentation': f'UperNet + VMamba-T on synthetic street scenes ({data_root}, made on first use)',
              'classification': f'VMamba classifier on synthetic shapes ({data_root}, made on first use)'}
    metrics, runner, seconds = run(cfg, titles[task])
    timings.append(({'detection': 'detection'}.get(task, 'training'), seconds))
    total = time.time() - start

    val = runner.val_dataloader.dataset
    print(f'\n== Results on the {len(val)} validation images ==')
    for row in _table(task, metrics, [h.get('type') for h in cfg.get('custom_hooks') or []]):
        print(row)
    print('time: ' + ', '.join(f'{name} {s / 60:.1f} min' for name, s in timings) +
          f', total {total / 60:.1f} min (on {"CUDA" if torch.cuda.is_available() else "the CPU"})')
    for name, path in runner.demo_pictures.items():
        print(f'{name + ":":13}{_shown(path)}')
    last = _last_checkpoint(cfg.work_dir)
    print(f'{"logs:":13}{_shown(runner.log_dir)}')
    print(f'{"checkpoints:":13}{_shown(cfg.work_dir)}{os.sep} (last: {_shown(last)})')
    print(f'evaluate again: python tools/test.py {_shown(config)} {_shown(last)}')
    return metrics


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--task', choices=sorted(CONFIGS), default='detection', help='which demo (default: detection)')
    parser.add_argument('--no-train', action='store_true', help='only print the model summary')
    parser.add_argument('--pretrain', action='store_true',
                        help='detection: pretrain the backbone on single shapes first, then fine-tune from it')
    parser.add_argument('--epochs', type=int, help='training epochs of the main run (default: the config\'s)')
    parser.add_argument('--seed', type=int, help='training seed (default: the config\'s, 0)')
    parser.add_argument('--work-dir', help='logs, checkpoints, pictures (default: ./work_dirs/<config name>; '
                                           'the detection pretraining goes to its pretrain/ folder)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override entries of the main config')
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error('--epochs must be at least 1')
    describe_model()
    if args.no_train:
        return None
    try:
        return train_demo(args.task, args.work_dir, args.epochs, args.seed, args.cfg_options,
                          pretrained=args.pretrain)
    except (ToolError, FileExistsError) as err:
        sys.exit(f'error: {err}')


if __name__ == '__main__':
    main()
