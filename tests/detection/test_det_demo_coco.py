"""The synthetic COCO generator (vmamba.demo.coco) and the dataset that writes it on first use."""
import filecmp
import json
import os.path as osp

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from vmamba.demo import coco as demo

SMALL = dict(num_train=6, num_val=3, image_size=64, max_objects=3, seed=0)


@pytest.fixture(scope='module')
def small_set(tmp_path_factory):
    return demo.generate_demo_coco(str(tmp_path_factory.mktemp('demo') / 'coco'), **SMALL)


def load(root, split):
    with open(osp.join(root, demo.ann_file(split))) as f:
        return json.load(f)


def test_layout_and_counts(small_set):
    for split, count in (('train', SMALL['num_train']), ('val', SMALL['num_val'])):
        ann = load(small_set, split)
        assert [c['name'] for c in ann['categories']] == list(demo.CLASSES)
        assert [c['id'] for c in ann['categories']] == list(range(1, len(demo.CLASSES) + 1))
        assert len(ann['images']) == count
        ids = [a['id'] for a in ann['annotations']]
        assert len(ids) == len(set(ids)), 'annotation ids must be unique (CocoDataset asserts it)'
        assert len(ann['annotations']) >= count  # at least one shape per image
        for image in ann['images']:
            pixels = cv2.imread(osp.join(small_set, demo.image_dir(split), image['file_name']))
            assert pixels.shape == (image['height'], image['width'], 3) == (64, 64, 3)


def test_same_seed_same_bytes_other_seed_other_images(small_set, tmp_path):
    again = demo.generate_demo_coco(str(tmp_path / 'again'), **SMALL)
    other = demo.generate_demo_coco(str(tmp_path / 'other'), **dict(SMALL, seed=1))
    for split in demo.SPLITS:
        names = sorted(i['file_name'] for i in load(small_set, split)['images'])
        match, mismatch, errors = filecmp.cmpfiles(osp.join(small_set, split), osp.join(again, split), names,
                                                   shallow=False)
        assert match == names and not mismatch and not errors
        assert load(small_set, split) == load(again, split)
        assert load(small_set, split)['annotations'] != load(other, split)['annotations']


def test_masks_boxes_and_pixels_agree(small_set):
    """Each polygon rasterises to the painted region, and bbox/area are the polygon's."""
    ann = load(small_set, 'train')
    by_image = {}
    for a in ann['annotations']:
        by_image.setdefault(a['image_id'], []).append(a)
    for image in ann['images']:
        pixels = cv2.imread(osp.join(small_set, 'train', image['file_name'])).astype(float)
        h, w = image['height'], image['width']
        for a in by_image[image['id']]:
            poly = np.array(a['segmentation'][0]).reshape(-1, 2)
            x, y, bw, bh = a['bbox']
            assert np.allclose([x, y, x + bw, y + bh], [*poly.min(0), *poly.max(0)], atol=0.02)
            assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h
            rle = mask_utils.frPyObjects(a['segmentation'], h, w)
            mask = mask_utils.decode(mask_utils.merge(rle)).astype(bool)
            assert abs(mask.sum() - a['area']) / a['area'] < 0.15
            # A shape is one flat colour plus noise (std 8): inside, pixels vary far less than across
            # the whole image.
            inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            assert pixels[inner].std(axis=0).max() < 15


def test_ensure_reuses_matching_set_and_refuses_others(small_set, tmp_path):
    assert demo.ensure_demo_coco(small_set, **SMALL) == small_set  # same settings: reused as is
    with pytest.raises(FileExistsError, match='delete'):
        demo.ensure_demo_coco(small_set, **dict(SMALL, num_train=7))
    (tmp_path / 'real').mkdir()
    with pytest.raises(FileExistsError, match='not a demo COCO folder'):
        demo.ensure_demo_coco(str(tmp_path / 'real'), **SMALL)
    with pytest.raises(TypeError, match='unknown demo COCO settings'):
        demo.ensure_demo_coco(str(tmp_path / 'x'), image_sise=64)


def test_demo_dataset_generates_and_loads_in_mmdet(tmp_path):
    from mmengine.registry import init_default_scope
    from mmdet.registry import DATASETS
    import vmamba.demo.datasets.detection  # noqa: F401  (registers DemoCocoDataset)

    init_default_scope('mmdet')
    root = str(tmp_path / 'auto') + '/'
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                dict(type='PackDetInputs')]
    dataset = DATASETS.build(dict(type='DemoCocoDataset', data_root=root, split='val', generate=SMALL,
                                  pipeline=pipeline, test_mode=True))
    assert osp.isfile(osp.join(root, demo.ann_file('val')))
    assert len(dataset) == SMALL['num_val']
    assert dataset.metainfo['classes'] == demo.CLASSES
    sample = dataset[0]
    instances = sample['data_samples'].gt_instances
    assert sample['inputs'].shape == (3, 64, 64)
    assert len(instances) >= 1 and instances.masks.masks.shape[1:] == (64, 64)
    assert set(instances.labels.tolist()) <= set(range(len(demo.CLASSES)))


def test_each_class_has_its_colour_band():
    """The demo set is easy on purpose: a shape's hue is its class's (CLASS_HUES +- 0.04), bright on a dark background."""
    import colorsys
    rng = np.random.default_rng(0)
    for _ in range(10):
        image, instances = demo.render_image(rng, 64, max_objects=3)
        painted = np.zeros((64, 64), bool)
        for label, polygon in instances:
            mask = np.zeros((64, 64), np.uint8)
            cv2.fillPoly(mask, [np.round(polygon * 16).astype(np.int32)], 1, shift=4)
            inner = cv2.erode(mask, np.ones((3, 3), np.uint8)).astype(bool)
            painted |= mask.astype(bool)
            r, g, b = image[inner].mean(0) / 255
            hue, _, value = colorsys.rgb_to_hsv(r, g, b)
            distance = min(abs(hue - demo.CLASS_HUES[label]), 1 - abs(hue - demo.CLASS_HUES[label]))
            assert distance < 0.06 and value > 0.7, (demo.CLASSES[label], hue, value)
        assert image[~painted].mean() < 0.5 * 255


def test_sets_of_an_older_style_are_not_reused(small_set, tmp_path):
    import shutil
    old = str(tmp_path / 'old')
    shutil.copytree(small_set, old)
    meta = osp.join(old, 'demo_coco.json')
    with open(meta) as f:
        settings = json.load(f)
    settings.pop('style')
    with open(meta, 'w') as f:
        json.dump(settings, f)
    with pytest.raises(FileExistsError, match='older version.*delete'):
        demo.ensure_demo_coco(old, **SMALL)
