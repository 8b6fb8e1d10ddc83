"""The synthetic ImageNet-layout demo set and the dataset that writes it on first use."""
import os

import cv2
import numpy as np
import pytest

from vmamba.demo.imagenet import SHAPES, demo_classes, generate_demo_imagenet, is_demo_imagenet, render_image


def test_layout_is_imagenet_class_folders(tmp_path):
    root = generate_demo_imagenet(tmp_path / 'demo', num_classes=4, train_per_class=3, val_per_class=2, size=32)
    classes = demo_classes(4)
    assert classes == ('00_disk', '01_ring', '02_square', '03_triangle')
    for split, count in (('train', 3), ('val', 2)):
        assert sorted(os.listdir(os.path.join(root, split))) == list(classes)  # sorted order = label order
        for name in classes:
            files = sorted(os.listdir(os.path.join(root, split, name)))
            assert len(files) == count
            image = cv2.imread(os.path.join(root, split, name, files[0]))
            assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert is_demo_imagenet(root, num_classes=4, size=32)
    assert not is_demo_imagenet(root, num_classes=5)


def test_generation_is_deterministic_and_kept(tmp_path):
    a = generate_demo_imagenet(tmp_path / 'a', num_classes=3, train_per_class=2, val_per_class=1, size=24, seed=3)
    b = generate_demo_imagenet(tmp_path / 'b', num_classes=3, train_per_class=2, val_per_class=1, size=24, seed=3)
    path = os.path.join('val', '02_square', '02_square_00000.png')
    np.testing.assert_array_equal(cv2.imread(os.path.join(a, path)), cv2.imread(os.path.join(b, path)))
    mtime = os.path.getmtime(os.path.join(a, path))
    generate_demo_imagenet(a, num_classes=3, train_per_class=2, val_per_class=1, size=24, seed=3)  # no-op
    assert os.path.getmtime(os.path.join(a, path)) == mtime


def test_classes_differ_in_shape_not_only_in_colour():
    """Images of one class vary in colour; the class's shape is what they share."""
    rng = np.random.default_rng(0)
    disks = np.stack([render_image(rng, 0, len(SHAPES), 48) for _ in range(16)]).astype(float)
    centre_colours = disks[:, 20:28, 20:28].mean(axis=(1, 2))
    assert centre_colours.std(axis=0).max() > 20  # colours spread within a class


def test_refuses_to_write_over_other_data(tmp_path):
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'important.txt').write_text('keep me')
    with pytest.raises(FileExistsError, match='overwrite'):
        generate_demo_imagenet(tmp_path / 'mine', num_classes=2, train_per_class=1, val_per_class=1, size=16)
    generate_demo_imagenet(tmp_path / 'set', num_classes=2, train_per_class=1, val_per_class=1, size=16)
    with pytest.raises(FileExistsError, match='other settings'):
        generate_demo_imagenet(tmp_path / 'set', num_classes=3, train_per_class=1, val_per_class=1, size=16)


def test_demo_dataset_writes_the_set_on_first_use(tmp_path):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS
    import vmamba.demo.datasets.classification  # noqa: F401  (registers DemoImageNet)
    init_default_scope('mmpretrain')
    root = tmp_path / 'fresh'
    demo_cfg = dict(num_classes=3, train_per_class=2, val_per_class=1, size=16)
    train = DATASETS.build(dict(type='DemoImageNet', data_root=str(root), split='train', demo_cfg=demo_cfg))
    val = DATASETS.build(dict(type='DemoImageNet', data_root=str(root), split='val', demo_cfg=demo_cfg))
    assert len(train) == 6 and len(val) == 3
    assert train.CLASSES == demo_classes(3)
    assert sorted(train.get_gt_labels().tolist()) == [0, 0, 1, 1, 2, 2]


def test_single_shape_set_for_the_detection_pretraining(tmp_path):
    """vmamba.demo.shapes_cls: the detection classes, one shape per image, labelled by outline, colour random."""
    from vmamba.demo import coco, shapes_cls
    settings = dict(train_per_class=3, val_per_class=2, image_size=32, seed=0)
    root = shapes_cls.ensure_shapes_cls(str(tmp_path / 'shapes'), **settings)
    assert shapes_cls.class_folders() == tuple(f'{k}_{n}' for k, n in enumerate(coco.CLASSES))
    for split, count in (('train', 3), ('val', 2)):
        assert sorted(os.listdir(os.path.join(root, split))) == list(shapes_cls.class_folders())
        for name in shapes_cls.class_folders():
            files = sorted(os.listdir(os.path.join(root, split, name)))
            assert len(files) == count
            assert cv2.imread(os.path.join(root, split, name, files[0])).shape == (32, 32, 3)
    assert shapes_cls.ensure_shapes_cls(root, **settings) == root  # reused
    with pytest.raises(FileExistsError, match='delete'):
        shapes_cls.ensure_shapes_cls(root, **dict(settings, seed=1))
    rng = np.random.default_rng(0)
    brightest = [render_single_colour(shapes_cls.render_single(rng, 0, 48)) for _ in range(12)]
    assert np.std(brightest, axis=0).max() > 40  # circles come in many colours


def render_single_colour(image):
    """Colour of the brightest pixels (the shape) of an image."""
    value = image.max(axis=2)
    return image[value >= np.percentile(value, 90)].mean(0)


def test_shapes_dataset_writes_the_set_on_first_use(tmp_path):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS
    import vmamba.demo.datasets.classification  # noqa: F401  (registers DemoShapesImageNet)
    init_default_scope('mmpretrain')
    cfg = dict(type='DemoShapesImageNet', data_root=str(tmp_path / 'fresh'),
               demo_cfg=dict(train_per_class=2, val_per_class=1, image_size=16))
    train, val = DATASETS.build(dict(cfg, split='train')), DATASETS.build(dict(cfg, split='val'))
    assert len(train) == 8 and len(val) == 4
    assert sorted(train.get_gt_labels().tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]
