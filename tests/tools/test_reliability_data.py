"""Broken samples found before training, each with its file (vmamba/tasks/data_quality.py): by
tools/check_data.py, by tools/train.py (which stops before the first iteration, or with --skip-bad-data
trains without them).

Broken copies of the demo sets (written by their generators with the settings the shrunk configs of
reliability_lib use, so the demo datasets take them as they are): a segmentation label value above the
class count and a label map of another size than its image (ADE20K folders); a zero-width box, an unknown
category and a missing validation image (COCO json)."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from reliability_lib import losses, write_config
from repo_testlib import tool

from vmamba.demo import coco as demo_coco
from vmamba.demo.ade20k import generate_demo_ade20k

WITH_VAL = '''
val_dataloader = test_dataloader
val_cfg = dict(type='ValLoop')
val_evaluator = test_evaluator
'''


@pytest.fixture(scope='module')
def check():
    return tool('check_data')


@pytest.fixture
def broken_seg(tmp_path):
    root = tmp_path / 'seg'
    generate_demo_ade20k(str(root), num_train=4, num_val=1)
    ann = root / 'annotations' / 'training'
    value = ann / 'demo_00001.png'
    labels = np.asarray(Image.open(value)).copy()
    labels[0, 0] = 200  # an ADE20K id that is none of the 5 demo classes, nor the ignore index
    Image.fromarray(labels).save(value)
    size = ann / 'demo_00002.png'
    small = Image.open(size)
    small.resize((small.size[0] // 2, small.size[1] // 2), Image.NEAREST).save(size)
    return root, value, size


@pytest.fixture
def broken_det(tmp_path):
    root = tmp_path / 'det'
    demo_coco.ensure_demo_coco(str(root), num_train=4, num_val=2, image_size=64, max_objects=2, seed=0)
    ann_file = root / 'annotations' / 'instances_train.json'
    coco = json.loads(ann_file.read_text())
    flat, unknown = coco['annotations'][0], coco['annotations'][-1]
    flat['bbox'][2] = 0
    unknown['category_id'] = 99
    ann_file.write_text(json.dumps(coco))
    files = {im['id']: im['file_name'] for im in coco['images']}
    val = json.loads((root / 'annotations' / 'instances_val.json').read_text())
    missing = root / 'val' / val['images'][-1]['file_name']
    os.remove(missing)
    return (root, ann_file, root / 'train' / files[flat['image_id']], flat['id'],
            root / 'train' / files[unknown['image_id']], unknown['id'], missing)


def test_check_data_lists_each_segmentation_problem_with_its_file(check, tmp_path, capsys, broken_seg):
    root, value, size = broken_seg
    config = write_config(tmp_path, 'seg', root)
    with pytest.raises(SystemExit) as stop:
        check.main([config, '--split', 'train'])
    assert stop.value.code == 1
    assert capsys.readouterr().out.splitlines() == [
        f'train_dataloader: {value}: label values [200] are not classes (0..4, stored +1: reduce_zero_label) '
        'or the ignore index 255',
        f'train_dataloader: {size}: label map is 64x48, its image {root}/images/training/demo_00002.jpg is 128x96']


def test_check_data_lists_each_detection_problem_with_its_file(check, tmp_path, capsys, broken_det):
    root, ann_file, flat_img, flat_id, unknown_img, unknown_id, missing = broken_det
    config = write_config(tmp_path, 'det', root, extra=WITH_VAL)
    with pytest.raises(SystemExit) as stop:
        check.main([config, '--split', 'all'])
    assert stop.value.code == 1
    out = capsys.readouterr().out.splitlines()
    assert f'train_dataloader: {flat_img}: annotation {flat_id} has a box of width 0 and height' in out[0]
    assert out[1] == (f'train_dataloader: {unknown_img}: annotation {unknown_id} has category_id 99, not one of '
                      f'{ann_file}\'s categories [1, 2, 3, 4]')
    listed = f'image does not exist (listed in {root}/annotations/instances_val.json)'
    assert out[2:] == [f'val_dataloader: {missing}: {listed}', f'test_dataloader: {missing}: {listed}']


def test_train_stops_before_the_first_iteration(train, tmp_path, broken_det):
    root, _, flat_img, _, unknown_img, _, missing = broken_det
    config = write_config(tmp_path, 'det', root, extra=WITH_VAL)
    work = tmp_path / 'work'
    with pytest.raises(SystemExit) as stop:
        train.main([config, '--work-dir', str(work)])
    message = str(stop.value.code)
    assert message.startswith('error: 3 problem(s) in the data, found before training:')
    for path in (flat_img, unknown_img, missing):
        assert str(path) in message
    assert '--skip-bad-data' in message
    assert not losses(work) and not list(work.glob('*.pth'))


def test_skip_bad_data_trains_on_the_good_samples(train, tmp_path, capsys, broken_seg):
    root, value, size = broken_seg
    config = write_config(tmp_path, 'seg', root, length=2)
    work = tmp_path / 'skip'
    train.main([config, '--work-dir', str(work), '--skip-bad-data', '--cfg-options', 'experiment_name=data_skip',
                'visualizer.name=data_skip'])
    err = capsys.readouterr().err
    assert '--skip-bad-data: training without 2 bad sample(s) or annotation(s):' in err
    assert str(value) in err and str(size) in err
    assert sorted(losses(work)) == [1, 2]
    from mmengine.config import Config
    dumped = Config.fromfile(str(work / 'seg_w0.py'))
    from vmamba.tasks.data_checks import _innermost_datasets
    leaf, = _innermost_datasets(dumped.train_dataloader.dataset)  # under the exact-resume wrapper
    assert leaf.indices == [0, 3]  # demo_00001 and demo_00002 left out


def test_check_data_lists_classification_problems_of_an_annotation_file(check, tmp_path, capsys):
    from vmamba.demo.imagenet import generate_demo_imagenet
    root = tmp_path / 'cls'
    generate_demo_imagenet(str(root), train_per_class=2, val_per_class=1)
    good = sorted((root / 'train' / '00_disk').iterdir())[0]
    ann = tmp_path / 'train.txt'  # ImageNet's "path label" annotation file
    ann.write_text(f'00_disk/{good.name} 0\n01_ring/missing.png 1\n00_disk/{good.name} 9\n')
    config = write_config(tmp_path, 'cls', root)
    with pytest.raises(SystemExit) as stop:
        check.main([config, '--split', 'train', '--cfg-options', f'train_dataloader.dataset.ann_file={ann}'])
    assert stop.value.code == 1
    assert capsys.readouterr().out.splitlines() == [
        f'train_dataloader: {root}/train/01_ring/missing.png: image does not exist',
        f'train_dataloader: {good}: label 9 is not a class (0..5)']
