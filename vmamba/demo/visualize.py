"""Pictures of what a demo run learned: predictions next to the ground truth, and training curves.

Pure drawing (numpy, OpenCV, matplotlib's Agg backend); the hooks in :mod:`vmamba.demo.hooks` collect
what to draw during validation. Every function writes one PNG and returns its path.

* :func:`detection_grid`: per image, the ground-truth masks and boxes next to the predicted ones;
* :func:`segmentation_grid`: per image, the picture, the true label map and the predicted one (overlaid);
* :func:`classification_grid`: the images with their predicted and true labels (green: right, red: wrong);
* :func:`plot_curves`: the training loss and the validation metrics over the run.
"""
import os
import os.path as osp

import cv2
import numpy as np

__all__ = ['PALETTE', 'draw_instances', 'detection_grid', 'segmentation_grid', 'classification_grid',
           'plot_curves']

#: RGB colours, one per class index (cycled).
PALETTE = ((230, 60, 60), (60, 140, 255), (250, 200, 40), (60, 210, 90), (200, 90, 230), (40, 220, 220),
           (255, 140, 40), (160, 160, 160))
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _colour(index, palette=PALETTE):
    return tuple(int(c) for c in palette[int(index) % len(palette)])


def _upscale(image, scale):
    image = np.ascontiguousarray(image[..., :3]).astype(np.uint8)
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) if scale != 1 else image


def _text(canvas, text, org, colour=(255, 255, 255), size=0.4):
    x, y = int(org[0]), int(org[1])
    cv2.putText(canvas, text, (x, y), _FONT, size, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(canvas, text, (x, y), _FONT, size, colour, 1, cv2.LINE_AA)


def _write(path, canvas):
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(canvas[..., ::-1])):
        raise OSError(f'could not write {path}')
    return str(path)


def _tile(cells, columns, gap=4, fill=255):
    """Cells (equal-sized RGB arrays) in rows of ``columns``, separated by ``gap`` pixels of ``fill``."""
    h, w = cells[0].shape[:2]
    rows = (len(cells) + columns - 1) // columns
    canvas = np.full((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, 3), fill, np.uint8)
    for i, cell in enumerate(cells):
        r, c = divmod(i, columns)
        canvas[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = cell
    return canvas


def _header(canvas, title, height=22):
    head = np.full((height, canvas.shape[1], 3), 255, np.uint8)
    cv2.putText(head, title, (6, height - 7), _FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([head, canvas], axis=0)


def draw_instances(image, bboxes, labels, masks=None, scores=None, classes=None, scale=3, palette=PALETTE):
    """``image`` (H, W, 3 RGB) upscaled by ``scale`` with translucent masks, box outlines and labels."""
    canvas = _upscale(image, scale).astype(np.float32)
    bboxes = np.asarray(bboxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1)
    if masks is not None and len(masks):
        for mask, label in zip(masks, labels):
            big = _upscale(np.repeat(np.asarray(mask, np.uint8)[..., None], 3, 2), scale)[..., 0].astype(bool)
            canvas[big] = 0.45 * canvas[big] + 0.55 * np.array(_colour(label, palette), np.float32)
    canvas = np.clip(canvas, 0, 255).astype(np.uint8)
    if masks is not None and len(masks):  # white outlines: a mask shows even where it matches the shape's colour
        for mask in masks:
            big = _upscale(np.repeat(np.asarray(mask, np.uint8)[..., None], 3, 2), scale)[..., 0]
            contours, _ = cv2.findContours(np.ascontiguousarray(big), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(canvas, contours, -1, (255, 255, 255), 1)
    for i, (box, label) in enumerate(zip(bboxes, labels)):
        x0, y0, x1, y1 = (box * scale).round().astype(int)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), _colour(label, palette), 1)
        name = classes[int(label)] if classes is not None else str(int(label))
        if scores is not None:
            name += f' {float(scores[i]):.2f}'
        _text(canvas, name, (x0 + 2, max(y0 - 3, 10)), _colour(label, palette), 0.35)
    return canvas


def detection_grid(samples, path, classes=None, scale=3, columns=2, title=None):
    """One cell per sample: its ground truth (left) and the predictions (right), side by side.

    Each sample is a dict with ``image`` (H, W, 3 RGB uint8), ``gt`` and ``pred``, each a dict of
    ``bboxes`` (N, 4 xyxy), ``labels`` (N,), optionally ``masks`` (N, H, W) and (``pred``) ``scores``.
    """
    if not samples:
        raise ValueError('detection_grid: no samples to draw')
    cells = []
    for sample in samples:
        gt, pred = sample['gt'], sample['pred']
        left = draw_instances(sample['image'], gt['bboxes'], gt['labels'], gt.get('masks'), None, classes, scale)
        right = draw_instances(sample['image'], pred['bboxes'], pred['labels'], pred.get('masks'),
                               pred.get('scores'), classes, scale)
        _text(left, 'truth', (4, left.shape[0] - 5), (255, 255, 255), 0.4)
        _text(right, 'predicted', (4, right.shape[0] - 5), (255, 255, 255), 0.4)
        cells.append(np.concatenate([left, np.full((left.shape[0], 2, 3), 255, np.uint8), right], axis=1))
    canvas = _tile(cells, min(columns, len(cells)), gap=8)
    return _write(path, _header(canvas, title) if title else canvas)


def _label_overlay(image, label_map, scale, palette, ignore_index=255, alpha=0.6):
    canvas = _upscale(image, scale).astype(np.float32)
    big = _upscale(np.repeat(np.asarray(label_map, np.uint8)[..., None], 3, 2), scale)[..., 0]
    colours = np.array([_colour(i, palette) for i in range(256)], np.float32)
    keep = big != ignore_index
    canvas[keep] = (1 - alpha) * canvas[keep] + alpha * colours[big[keep]]
    canvas[~keep] *= 0.5
    return np.clip(canvas, 0, 255).astype(np.uint8)


def segmentation_grid(samples, path, classes, palette=PALETTE, scale=2, ignore_index=255, title=None):
    """One row per sample: the image, the true label map and the predicted one, overlaid; a legend on top.

    Each sample is a dict with ``image`` (H, W, 3 RGB), ``gt`` and ``pred`` (H, W) class-index maps
    (``ignore_index`` = unlabelled, shown darkened).
    """
    if not samples:
        raise ValueError('segmentation_grid: no samples to draw')
    rows = []
    for sample in samples:
        image = _upscale(sample['image'], scale)
        gt = _label_overlay(sample['image'], sample['gt'], scale, palette, ignore_index)
        pred = _label_overlay(sample['image'], sample['pred'], scale, palette, ignore_index)
        for cell, name in ((image, 'image'), (gt, 'truth'), (pred, 'predicted')):
            _text(cell, name, (4, cell.shape[0] - 5))
        rows.extend([image, gt, pred])
    canvas = _tile(rows, 3, gap=4)
    legend = np.full((22, canvas.shape[1], 3), 255, np.uint8)
    x = 6
    for i, name in enumerate(classes):
        cv2.rectangle(legend, (x, 5), (x + 12, 17), _colour(i, palette), -1)
        cv2.putText(legend, name, (x + 16, 16), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        x += 24 + 8 * len(name)
    canvas = np.concatenate([legend, canvas], axis=0)
    return _write(path, _header(canvas, title) if title else canvas)


def classification_grid(samples, path, classes, scale=2, columns=8, title=None):
    """The images in a grid, each captioned ``predicted (true)``: green when right, red when wrong.

    Each sample is a dict with ``image`` (H, W, 3 RGB), ``pred`` and ``gt`` (class indices)."""
    if not samples:
        raise ValueError('classification_grid: no samples to draw')
    cells = []
    for sample in samples:
        image = _upscale(sample['image'], scale)
        caption = np.full((30, image.shape[1], 3), 255, np.uint8)
        right = int(sample['pred']) == int(sample['gt'])
        colour = (0, 150, 0) if right else (210, 0, 0)
        cv2.putText(caption, str(classes[int(sample['pred'])])[:16], (3, 12), _FONT, 0.36, colour, 1, cv2.LINE_AA)
        cv2.putText(caption, f'({classes[int(sample["gt"])]})'[:18], (3, 26), _FONT, 0.33, (90, 90, 90), 1,
                    cv2.LINE_AA)
        cells.append(np.concatenate([image, caption], axis=0))
    canvas = _tile(cells, min(columns, len(cells)), gap=4)
    return _write(path, _header(canvas, title) if title else canvas)


def plot_curves(history, path, title=None):
    """The training loss (per iteration, and its mean per epoch) and each validation metric over the run.

    ``history`` is a dict: ``iters_per_epoch`` (None for an iteration-based run: the x axis is then in
    iterations), ``loss`` a list of ``(iteration, value)``, and ``metrics`` a dict ``name -> [(iteration,
    value), ...]`` (iteration = the training iterations done when it was measured).
    """
    import matplotlib
    matplotlib.use('Agg', force=False)
    import matplotlib.pyplot as plt

    per_epoch = history.get('iters_per_epoch')
    unit = per_epoch or 1
    xlabel = 'epoch' if per_epoch else 'iteration'
    metrics = {k: v for k, v in (history.get('metrics') or {}).items() if v}
    fig, axes = plt.subplots(1, 1 + bool(metrics), figsize=(9 if metrics else 5, 3.4), squeeze=False)
    ax = axes[0, 0]
    loss = np.asarray(history.get('loss') or [], np.float64).reshape(-1, 2)
    if len(loss):
        ax.plot(loss[:, 0] / unit, loss[:, 1], color='tab:blue', alpha=0.35, lw=1, label='per iteration')
        if per_epoch:
            epochs = np.ceil(loss[:, 0] / per_epoch)
            ends = np.unique(epochs)
            ax.plot(ends, [loss[epochs == e, 1].mean() for e in ends], 'o-', color='tab:blue', label='epoch mean')
        ax.legend(fontsize=8)
    ax.set(xlabel=xlabel, ylabel='training loss', title='loss')
    ax.grid(alpha=0.3)
    if metrics:
        ax = axes[0, 1]
        for name, points in metrics.items():
            points = np.asarray(points, np.float64).reshape(-1, 2)
            ax.plot(points[:, 0] / unit, points[:, 1], 'o-', label=name)
        ax.set(xlabel=xlabel, title='validation')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)
