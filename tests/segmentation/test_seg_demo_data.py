"""The synthetic ADE20K-layout demo set and the dataset class that writes it on first use."""
import os
import os.path as osp

import cv2
import numpy as np
import pytest

from vmamba.demo.ade20k import (ADE20K_IDS, DEMO_CLASSES, generate_demo_ade20k, is_demo_ade20k,
                                render_scene)


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory):
    return generate_demo_ade20k(tmp_path_factory.mktemp('demo') / 'ade', num_train=6, num_val=3, size=(48, 64))


def _files(root, kind, split, suffix):
    return sorted(f for f in os.listdir(osp.join(root, kind, split)) if f.endswith(suffix))


def test_layout(demo_root):
    for split, count in (('training', 6), ('validation', 3)):
        images = _files(demo_root, 'images', split, '.jpg')
        labels = _files(demo_root, 'annotations', split, '.png')
        assert len(images) == count
        assert [f[:-4] for f in images] == [f[:-4] for f in labels]
        for img_name, ann_name in zip(images, labels):
            image = cv2.imread(osp.join(demo_root, 'images', split, img_name), cv2.IMREAD_UNCHANGED)
            label = cv2.imread(osp.join(demo_root, 'annotations', split, ann_name), cv2.IMREAD_UNCHANGED)
            assert image.shape == (48, 64, 3) and image.dtype == np.uint8
            assert label.shape == (48, 64) and label.dtype == np.uint8
            assert set(np.unique(label)) <= {0, *ADE20K_IDS.values()}
    assert is_demo_ade20k(demo_root)


def test_ids_are_ade20k_ids():
    """The PNGs store real ADE20K ids (class index + 1), so the 150-class configs read them too."""
    from mmseg.datasets import ADE20KDataset
    classes = ADE20KDataset.METAINFO['classes']
    assert set(DEMO_CLASSES) == set(ADE20K_IDS)
    for name, ade_id in ADE20K_IDS.items():
        assert classes[ade_id - 1] == name


def test_scenes_cover_every_class_and_ignore():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(8):
        image, label = render_scene(rng, 96, 128)
        assert image.shape == (96, 128, 3)
        seen |= set(np.unique(label).tolist())
    assert seen == {0, *ADE20K_IDS.values()}


def test_deterministic_and_reused(tmp_path):
    a = generate_demo_ade20k(tmp_path / 'a', num_train=2, num_val=1, size=(32, 32), seed=3)
    b = generate_demo_ade20k(tmp_path / 'b', num_train=2, num_val=1, size=(32, 32), seed=3)
    c = generate_demo_ade20k(tmp_path / 'c', num_train=2, num_val=1, size=(32, 32), seed=4)
    ann = osp.join('annotations', 'training', 'demo_00000.png')
    read = lambda root: cv2.imread(osp.join(root, ann), cv2.IMREAD_UNCHANGED)  # noqa: E731
    assert np.array_equal(read(a), read(b))
    assert not np.array_equal(read(a), read(c))
    # A complete set is kept as it is (no rewrite) unless overwrite=True.
    stamp = os.stat(osp.join(a, ann)).st_mtime_ns
    generate_demo_ade20k(a, num_train=2, num_val=1, size=(32, 32), seed=4)
    assert os.stat(osp.join(a, ann)).st_mtime_ns == stamp
    generate_demo_ade20k(a, num_train=2, num_val=1, size=(32, 32), seed=4, overwrite=True)
    assert np.array_equal(read(a), read(c))
    assert not [f for f in os.listdir(tmp_path) if f.startswith('.demo_ade20k-')], 'staging folders left'


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'notes.txt').write_text('not a dataset')
    with pytest.raises(FileExistsError, match='overwrite=True'):
        generate_demo_ade20k(tmp_path / 'mine', num_train=1, num_val=1)
    with pytest.raises(ValueError, match='at least 16x16'):
        generate_demo_ade20k(tmp_path / 'tiny', size=(8, 8))


def test_dataset_generates_and_maps_labels(tmp_path):
    """DemoADE20KDataset writes a missing set; labels come out as demo indices 0..4, ADE 'other' as 255."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    import vmamba.demo.datasets.segmentation  # noqa: F401  (registers DemoADE20KDataset)
    init_default_scope('mmseg')
    root = tmp_path / 'auto'
    dataset = DATASETS.build(dict(
        type='DemoADE20KDataset', data_root=str(root), demo_cfg=dict(num_train=3, num_val=2, size=(40, 56)),
        metainfo=dict(classes=DEMO_CLASSES),
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=True),
                  dict(type='PackSegInputs')]))
    assert is_demo_ade20k(str(root)) and len(dataset) == 2
    assert list(dataset.metainfo['classes']) == list(DEMO_CLASSES)
    sample = dataset[0]
    raw = cv2.imread(sample['data_samples'].seg_map_path, cv2.IMREAD_UNCHANGED)
    mapped = sample['data_samples'].gt_sem_seg.data[0].numpy()
    assert mapped.shape == raw.shape == (40, 56)
    expected = np.full_like(raw, 255)
    for index, name in enumerate(DEMO_CLASSES):
        expected[raw == ADE20K_IDS[name]] = index
    assert np.array_equal(mapped, expected)
