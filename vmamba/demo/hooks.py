"""mmengine hooks of the demos (registered on import): pictures and curves, and a one-line-per-epoch progress.

``DemoVisHook`` is in the demo configs' ``custom_hooks``, so ``tools/train.py`` and ``tools/demo.py`` both leave
``predictions.png`` and ``curves.png`` in the work directory; ``DemoProgressHook`` is what ``tools/demo.py``
prints on the console. Neither draws random numbers, so they change nothing of a run.
"""
import os.path as osp
import sys
import time

import cv2
import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop

from vmamba.demo import visualize
from vmamba.tasks.adapters import ADAPTERS

__all__ = ['DemoVisHook', 'DemoProgressHook', 'HEADLINE_METRICS']

#: The validation metrics the curves and the progress lines show, per task (the first ones found are used).
HEADLINE_METRICS = {key: label for adapter in ADAPTERS for key, label in adapter.headline_metrics}


def _numpy(value):
    if value is None:
        return None
    if hasattr(value, 'masks') and not torch.is_tensor(value):  # mmdet BitmapMasks / PolygonMasks
        value = value.to_ndarray() if hasattr(value, 'to_ndarray') else value.masks
    if torch.is_tensor(value):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _read_rgb(sample):
    path = sample.metainfo.get('img_path')
    image = cv2.imread(path, cv2.IMREAD_COLOR) if path else None
    if image is None:
        raise FileNotFoundError(f'DemoVisHook: cannot read the validation image {path!r}')
    return image[..., ::-1]


def _by_epoch(runner):
    """Whether the run counts epochs (an IterBasedTrainLoop also has a ``max_epochs``, of 1)."""
    return isinstance(runner.train_loop, EpochBasedTrainLoop)


def _float(value):
    return float(value.detach()) if torch.is_tensor(value) else float(value)


@HOOKS.register_module()
class DemoVisHook(Hook):
    """Keep the loss and the validation metrics, draw ``curves.png`` and ``predictions.png`` at the end.

    The predictions are those of the last validation on its first ``num_images`` images (nothing is run
    again): boxes and masks next to the ground truth (mmdet), label maps (mmseg) or labels (mmpretrain).

    Args:
        num_images: how many validation images to draw.
        score_thr: detections below this score are not drawn (they still count in the mAP).
        out_dir: where the PNGs go (default: the work directory).
    """

    priority = 'LOW'

    def __init__(self, num_images=8, score_thr=0.5, out_dir=None):
        self.num_images = num_images
        self.score_thr = score_thr
        self.out_dir = out_dir
        self.loss, self.metrics, self.samples, self.paths = [], {}, [], {}

    # ------------------------------------------------------------------ recording
    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if outputs and 'loss' in outputs:
            self.loss.append((runner.iter + 1, _float(outputs['loss'])))

    def before_val_epoch(self, runner):
        self.samples = []

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        for sample in outputs or []:
            if len(self.samples) >= self.num_images:
                return
            self.samples.append(self._convert(sample))

    def after_val_epoch(self, runner, metrics=None):
        for key, value in (metrics or {}).items():
            if key in HEADLINE_METRICS and value is not None and value >= 0:
                self.metrics.setdefault(key, []).append((runner.iter, float(value)))

    def _convert(self, sample):
        out = dict(image=_read_rgb(sample))
        if 'pred_instances' in sample:
            pred, gt = sample.pred_instances, sample.gt_instances
            keep = _numpy(pred.scores) >= self.score_thr
            out['pred'] = dict(bboxes=_numpy(pred.bboxes)[keep], labels=_numpy(pred.labels)[keep],
                               scores=_numpy(pred.scores)[keep],
                               masks=_numpy(pred.masks)[keep] if 'masks' in pred else None)
            out['gt'] = dict(bboxes=_numpy(gt.bboxes), labels=_numpy(gt.labels),
                             masks=_numpy(gt.masks) if 'masks' in gt else None)
            out['task'] = 'detection'
        elif 'pred_sem_seg' in sample:
            out['pred'] = _numpy(sample.pred_sem_seg.data)[0]
            out['gt'] = _numpy(sample.gt_sem_seg.data)[0]
            out['task'] = 'segmentation'
        elif 'pred_label' in sample:
            out['pred'] = int(_numpy(sample.pred_label).reshape(-1)[0])
            out['gt'] = int(_numpy(sample.gt_label).reshape(-1)[0])
            out['task'] = 'classification'
        else:
            raise TypeError(f'DemoVisHook: no predictions it knows how to draw in {type(sample).__name__}')
        return out

    # ------------------------------------------------------------------ drawing
    def history(self, runner):
        per_epoch = len(runner.train_dataloader) if _by_epoch(runner) else None
        return dict(iters_per_epoch=per_epoch, loss=list(self.loss), metrics=dict(self.metrics))

    def after_train(self, runner):
        if not is_main_process():  # one writer under torchrun (rank 0 drew its own share of the images)
            return
        out_dir = self.out_dir or runner.work_dir
        name = osp.splitext(osp.basename(runner.cfg.filename or 'run'))[0] if runner.cfg.filename else None
        self.paths['curves'] = visualize.plot_curves(self.history(runner), osp.join(out_dir, 'curves.png'),
                                                     title=name)
        if self.samples:
            classes = runner.val_dataloader.dataset.metainfo.get('classes')
            path = osp.join(out_dir, 'predictions.png')
            task = self.samples[0]['task']
            if task == 'detection':
                self.paths['predictions'] = visualize.detection_grid(self.samples, path, classes)
            elif task == 'segmentation':
                self.paths['predictions'] = visualize.segmentation_grid(self.samples, path, classes)
            else:
                self.paths['predictions'] = visualize.classification_grid(self.samples, path, classes)
        runner.logger.info('DemoVisHook: wrote ' + ', '.join(self.paths.values()))


@HOOKS.register_module()
class DemoProgressHook(Hook):
    """One short line per epoch (per ``interval`` iterations in an iteration-based run), with an ETA.

    ``stream`` is where the lines go (``tools/demo.py`` passes the console before it sends the libraries'
    chatter to a file). The ETA extrapolates the time per training iteration so far, validations included.
    """

    priority = 'LOWEST'

    def __init__(self, stream=None, interval=None, prefix='  '):
        self.stream = stream or sys.stdout
        self.interval = interval
        self.prefix = prefix
        self.start = None
        self.losses = []
        self.last_metrics = {}

    def before_train(self, runner):
        self.start = time.time()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if outputs and 'loss' in outputs:
            self.losses.append(_float(outputs['loss']))
        if not _by_epoch(runner):
            interval = self.interval or max(1, runner.max_iters // 5)
            if (runner.iter + 1) % interval == 0 or runner.iter + 1 == runner.max_iters:
                self._line(runner, f'iter {runner.iter + 1}/{runner.max_iters}')

    def after_train_epoch(self, runner):
        if _by_epoch(runner):
            self._line(runner, f'epoch {runner.epoch + 1}/{runner.max_epochs}')

    def after_val_epoch(self, runner, metrics=None):
        self.last_metrics = dict(metrics or {})
        shown = [f'{label} {metrics[key]:.3f}' for key, label in HEADLINE_METRICS.items()
                 if metrics and key in metrics]
        if shown:
            print(f'{self.prefix}  validation: ' + ', '.join(shown), file=self.stream, flush=True)

    def _line(self, runner, where):
        elapsed = time.time() - self.start
        done = runner.iter + 1 if not _by_epoch(runner) else runner.iter
        eta = elapsed / max(done, 1) * (runner.max_iters - done)
        loss = np.mean(self.losses) if self.losses else float('nan')
        self.losses = []
        print(f'{self.prefix}{where}  loss {loss:.3f}  {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min',
              file=self.stream, flush=True)
