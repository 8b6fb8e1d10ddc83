"""vmamba.demo.visualize: every picture is written, has the size its layout implies, and is not blank."""
import cv2
import numpy as np
import pytest

from vmamba.demo import visualize
from vmamba.demo.coco import CLASSES, render_image

SIZE, SCALE = 64, 3


def _read(path):
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f'{path} was not written'
    return image


def _assert_not_blank(image):
    assert image.std() > 20, 'the picture is (nearly) one flat colour'
    colours = np.unique(image.reshape(-1, 3) // 32, axis=0)
    assert len(colours) > 10, f'only {len(colours)} colour bins in the picture'


def _instances(seed):
    rng = np.random.default_rng(seed)
    image, shapes = render_image(rng, SIZE, max_objects=3)
    boxes = np.array([[*p.min(0), *p.max(0)] for _, p in shapes], np.float32)
    masks = np.zeros((len(shapes), SIZE, SIZE), np.uint8)
    for mask, (_, polygon) in zip(masks, shapes):
        cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
    labels = np.array([label for label, _ in shapes])
    return image, dict(bboxes=boxes, labels=labels, masks=masks)


def test_detection_grid_size_and_content(tmp_path):
    samples = []
    for seed in range(3):
        image, gt = _instances(seed)
        pred = dict(gt, bboxes=gt['bboxes'] + 1.5, scores=np.full(len(gt['labels']), 0.9))
        samples.append(dict(image=image, gt=gt, pred=pred))
    path = visualize.detection_grid(samples, tmp_path / 'predictions.png', CLASSES, scale=SCALE, columns=2)
    picture = _read(path)
    cell_w, cell_h, gap = 2 * SIZE * SCALE + 2, SIZE * SCALE, 8
    assert picture.shape == (2 * cell_h + gap, 2 * cell_w + gap, 3)  # 3 samples in rows of 2
    _assert_not_blank(picture)
    # the left half of the first cell is the ground truth: its first mask is tinted with the class colour
    label = int(samples[0]['gt']['labels'][0])
    ys, xs = np.nonzero(cv2.erode(samples[0]['gt']['masks'][0], np.ones((5, 5), np.uint8)))
    tinted = picture[ys * SCALE + 1, xs * SCALE + 1][:, ::-1].astype(float).mean(0)  # BGR -> RGB
    original = samples[0]['image'][ys, xs].astype(float).mean(0)
    target = np.array(visualize.PALETTE[label], float)
    assert np.abs(tinted - target).sum() < np.abs(original - target).sum()


def test_segmentation_grid(tmp_path):
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(2):
        gt = rng.integers(0, 5, (48, 64)).astype(np.uint8)
        gt[:4] = 255  # ignored rows
        samples.append(dict(image=rng.integers(0, 255, (48, 64, 3)).astype(np.uint8), gt=gt, pred=np.roll(gt, 3, 1)))
    picture = _read(visualize.segmentation_grid(samples, tmp_path / 'seg.png', ('a', 'b', 'c', 'd', 'e'), scale=2))
    assert picture.shape == (22 + 2 * 96 + 4, 3 * 128 + 2 * 4, 3)  # legend, 2 rows of image | truth | prediction
    _assert_not_blank(picture)


def test_classification_grid(tmp_path):
    rng = np.random.default_rng(0)
    samples = [dict(image=rng.integers(0, 255, (32, 32, 3)).astype(np.uint8), pred=i % 3, gt=(i + i // 3) % 3)
               for i in range(10)]
    picture = _read(visualize.classification_grid(samples, tmp_path / 'cls.png', ('x', 'y', 'z'), scale=2, columns=4))
    assert picture.shape == (3 * (64 + 30) + 2 * 4, 4 * 64 + 3 * 4, 3)
    _assert_not_blank(picture)
    captions = picture[64:94, :64]  # the first caption: right (pred 0 = gt 0), so green text
    assert (captions[..., 1].astype(int) - captions[..., 2] > 60).any()


@pytest.mark.parametrize('per_epoch', [5, None])
def test_curves(tmp_path, per_epoch):
    history = dict(iters_per_epoch=per_epoch, loss=[(i, 3.0 / i) for i in range(1, 16)],
                   metrics={'coco/bbox_mAP': [(5, 0.1), (10, 0.3), (15, 0.5)]})
    picture = _read(visualize.plot_curves(history, tmp_path / 'curves.png', title='demo'))
    assert picture.shape == (340, 900, 3)  # figsize (9, 3.4) at 100 dpi
    _assert_not_blank(picture)
    assert _read(visualize.plot_curves(dict(history, metrics={}), tmp_path / 'loss.png')).shape == (340, 500, 3)


def test_no_samples_is_an_error(tmp_path):
    with pytest.raises(ValueError, match='no samples'):
        visualize.detection_grid([], tmp_path / 'x.png')
