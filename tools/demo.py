"""The README's main job: what VMamba-T is, then Mask R-CNN + VMamba-T trained and evaluated on the CPU.

    python tools/demo.py                  # model summary, then the detection demo (a few minutes on a CPU)
    python tools/demo.py --no-train       # the model summary only
    python tools/demo.py --epochs 2 --work-dir /tmp/demo --cfg-options train_dataloader.batch_size=2

The detection part runs configs/detection/maskrcnn_vmamba_tiny_demo.py (the real Mask R-CNN + VMamba-T
config on a synthetic shapes set, made on first use under data/demo_coco/), as ``python tools/train.py``
would, with a short progress line per epoch on the console (mmengine's full log goes to the log file), then
prints the bbox and mask mAP of mmdet's CocoMetric and where the logs and checkpoints went. Paths are
relative to the current directory.
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
from mmengine.hooks import Hook

from vmamba.models import VMamba, VSSM
from vmamba.tasks import common

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(REPO, 'configs', 'detection', 'maskrcnn_vmamba_tiny_demo.py')


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


class _Progress(Hook):
    """Prints a compact progress line every few iterations and keeps the last validation metrics.

    (mmengine's own log goes to the log file; on the console the demo shows only these lines.)
    """

    priority = 'LOWEST'

    def __init__(self, every=12, stream=sys.stdout):
        self.every = every
        self.stream = stream
        self.metrics = {}
        self.start = time.time()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        done, total = runner.iter + 1, runner.max_iters
        if done % self.every and done != total:
            return
        loss = (outputs or {}).get('loss')
        loss = float(loss.detach()) if torch.is_tensor(loss) else float('nan')
        print(f'  epoch {runner.epoch + 1}/{runner.max_epochs}  iter {done}/{total}  loss {loss:.3f}  '
              f'({(time.time() - self.start) / 60:.1f} min)', file=self.stream, flush=True)

    def after_val_epoch(self, runner, metrics=None):
        self.metrics = dict(metrics or {})
        print(f'  validation: box mAP {self.metrics.get("coco/bbox_mAP", float("nan")):.3f}, '
              f'mask mAP {self.metrics.get("coco/segm_mAP", float("nan")):.3f}', file=self.stream, flush=True)


def build_demo_config(work_dir=None, epochs=None, cfg_options=None):
    cfg = Config.fromfile(DEMO_CONFIG)
    if epochs is not None:
        cfg.train_cfg.max_epochs = epochs
        cfg.train_cfg.val_interval = epochs
        for scheduler in cfg.param_scheduler:  # the demo's lr drop stays before the last epoch
            if scheduler.type == 'MultiStepLR':
                scheduler.end = epochs
                scheduler.milestones = [max(1, epochs - 1)]
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.launcher = 'none'
    common.default_work_dir(cfg, DEMO_CONFIG, work_dir)
    common.add_step_seed_hook(cfg)
    common.fix_dataloaders(cfg)
    return cfg


def train_detection_demo(work_dir=None, epochs=None, cfg_options=None):
    """Train the demo config, evaluate it, and print a summary. Returns the last validation metrics."""
    cfg = build_demo_config(work_dir, epochs, cfg_options)
    data_root = cfg.train_dataloader.dataset.data_root
    print(f'\n== Mask R-CNN + VMamba-T on the synthetic shapes set ({data_root}, made on first use) ==')
    epochs = cfg.train_cfg.max_epochs
    print(f'{epochs} epoch{"s" * (epochs != 1)} on {"CUDA" if torch.cuda.is_available() else "the CPU"}', flush=True)
    cfg.log_level = 'WARNING'  # the console shows warnings and _Progress; the log file gets INFO (below)
    runner = common.build_runner(cfg)
    runner.logger.setLevel(logging.INFO)
    for handler in runner.logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.INFO)
    progress = _Progress(stream=sys.stdout)
    runner.register_hook(progress)
    start = time.time()
    # pycocotools prints its loading notes and evaluation tables; they go to the log folder instead.
    with open(osp.join(runner.log_dir, 'stdout.txt'), 'w') as chatter, contextlib.redirect_stdout(chatter):
        runner.train()
    minutes = (time.time() - start) / 60
    metrics = progress.metrics
    last = osp.join(cfg.work_dir, f'epoch_{cfg.train_cfg.max_epochs}.pth')
    print(f'\n== Demo finished in {minutes:.1f} min ==')
    for kind, name in (('bbox', 'box'), ('segm', 'mask')):
        print(f'{name} mAP: {metrics.get(f"coco/{kind}_mAP", float("nan")):.3f}   '
              f'(mAP@0.5: {metrics.get(f"coco/{kind}_mAP_50", float("nan")):.3f})')
    print(f'logs:        {runner.log_dir}')
    print(f'checkpoints: {cfg.work_dir}{os.sep} (last: {last})')
    config = osp.relpath(DEMO_CONFIG)
    print(f'evaluate again: python tools/test.py {DEMO_CONFIG if config.startswith("..") else config} {last}')
    return metrics


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--no-train', action='store_true', help='only print the model summary')
    parser.add_argument('--epochs', type=int, help='training epochs (default: the demo config\'s)')
    parser.add_argument('--work-dir', help='logs and checkpoints (default: ./work_dirs/maskrcnn_vmamba_tiny_demo)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override demo config entries')
    args = parser.parse_args(argv)
    describe_model()
    if args.no_train:
        return None
    try:
        return train_detection_demo(args.work_dir, args.epochs, args.cfg_options)
    except common.ToolError as err:
        sys.exit(f'error: {err}')


if __name__ == '__main__':
    main()
