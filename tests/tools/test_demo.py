"""tools/demo.py, the README's main job, on a shrunken budget: the model summary, a short detection run whose
losses fall and whose mAP is far above chance, the result table, the pictures and the paths; and the
``--pretrain`` hand-over (a classification checkpoint of the demo backbone loads into the detector)."""
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from repo_testlib import REPO, subprocess_env

DET_DEMO = osp.join(REPO, 'configs', 'detection', 'maskrcnn_vmamba_tiny_demo.py')
PRETRAIN = osp.join(REPO, 'configs', 'classification', 'vmamba_shapes_pretrain_demo.py')


def run(args, cwd):
    env = subprocess_env()
    proc = subprocess.run([sys.executable, *args], cwd=str(cwd), env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
    """3 epochs of 8 iterations (64 training images, batch 8), validated on 8 images after each epoch."""
    tmp = tmp_path_factory.mktemp('demo')
    root, work = str(tmp / 'data') + '/', str(tmp / 'work')
    generate = dict(num_train=64, num_val=8, image_size=64, max_objects=3, seed=0)
    options = [f'{loader}.dataset.data_root={root}' for loader in ('train_dataloader', 'val_dataloader')]
    options += [f'{loader}.dataset.generate.{k}={v}' for loader in ('train_dataloader', 'val_dataloader')
                for k, v in generate.items()]
    options += [f'val_evaluator.ann_file={root}annotations/instances_val.json']
    out = run([osp.join(REPO, 'tools', 'demo.py'), '--epochs', '3', '--work-dir', work, '--cfg-options', *options],
              cwd=tmp)
    return out, work, tmp


def printed_path(out, name, cwd):
    """The path printed after ``name:`` (relative to the demo's working directory), made absolute."""
    match = re.search(rf'^{name}:\s+(\S+)', out, re.M)
    assert match, (name, out[-1500:])
    return osp.normpath(osp.join(str(cwd), match.group(1)))


def test_summary_table_and_paths(demo_run):
    out, work, cwd = demo_run
    assert re.search(r'VMamba-T \(tiny_s1l8\) classifier: [\d,]+ parameters', out)
    assert 'stage 3 feature map: (1, 768, 7, 7)' in out
    assert len(re.findall(r'^  epoch \d/3  loss [\d.]+  [\d.]+ min, ETA [\d.]+ min$', out, re.M)) == 3, out
    assert len(re.findall(r'validation: box mAP [\d.]+, mask mAP [\d.]+', out)) == 3
    assert 'Results on the 8 validation images' in out and re.search(r'^time: detection [\d.]+ min', out, re.M)
    assert printed_path(out, 'checkpoints', cwd) == work and osp.isfile(osp.join(work, 'epoch_3.pth'))
    logs = printed_path(out, 'logs', cwd)
    assert osp.isdir(logs) and any(f.endswith('.log') for f in os.listdir(logs))
    for name in ('predictions', 'curves'):
        assert printed_path(out, name, cwd) == osp.join(work, name + '.png')


def test_losses_fall_and_map_is_far_above_chance(demo_run):
    out, work, _ = demo_run
    table = {m.group(1): [float(v) for v in m.groups()[1:]]
             for m in re.finditer(r'^(box|mask)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$', out, re.M)}
    assert set(table) == {'box', 'mask'}, out[-1500:]
    # Random boxes on these images score an mAP@0.5 of about 0.00; 24 iterations from scratch reach ~0.3.
    for name, (m, m50, _) in table.items():
        assert m50 > 0.1 and m > 0.02, (name, table)
    [scalars] = glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json'))
    with open(scalars) as f:
        records = [r for r in map(json.loads, f) if 'loss' in r]
    first, last = records[0], records[-1]  # logged at the end of each epoch: iterations 8 and 24
    assert last['loss'] < 0.75 * first['loss'], (first, last)
    for key in ('loss_rpn_cls', 'loss_cls', 'loss_mask'):
        assert last[key] < first[key], (key, first, last)


def test_pictures_have_their_size_and_content(demo_run):
    _, work, _ = demo_run
    predictions = cv2.imread(osp.join(work, 'predictions.png'))
    # 8 validation images as 4 rows of 2 cells; a cell is truth | prediction at 3x (64 px -> 192 px)
    assert predictions.shape == (4 * 192 + 3 * 8, 2 * (2 * 192 + 2) + 8, 3)
    curves = cv2.imread(osp.join(work, 'curves.png'))
    assert curves.shape == (340, 900, 3)
    for picture in (predictions, curves):
        assert picture.std() > 20 and len(np.unique(picture.reshape(-1, 3) // 32, axis=0)) > 10


def test_pretrain_checkpoint_initialises_the_detector(tmp_path):
    """--pretrain's hand-over: the classification run's backbone loads into Mask R-CNN through init_cfg."""
    work = tmp_path / 'pretrain'
    run([osp.join(REPO, 'tools', 'train.py'), PRETRAIN, '--work-dir', str(work), '--cfg-options',
         f'train_dataloader.dataset.data_root={tmp_path}/cls', f'val_dataloader.dataset.data_root={tmp_path}/cls',
         'train_dataloader.dataset.demo_cfg.train_per_class=8', 'val_dataloader.dataset.demo_cfg.train_per_class=8',
         'train_dataloader.dataset.demo_cfg.val_per_class=2', 'val_dataloader.dataset.demo_cfg.val_per_class=2',
         'train_cfg.max_epochs=1', 'default_hooks.checkpoint.interval=1'], cwd=tmp_path)
    checkpoint = str(work / 'epoch_1.pth')
    assert osp.isfile(work / 'predictions.png') and osp.isfile(work / 'curves.png')

    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS
    import vmamba.models  # noqa: F401
    init_default_scope('mmdet')
    cfg = Config.fromfile(DET_DEMO)
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')
    detector = MODELS.build(cfg.model)
    detector.init_weights()
    saved = torch.load(checkpoint, map_location='cpu', weights_only=False)['state_dict']
    own = detector.backbone.state_dict()
    loaded = [k for k in own if f'backbone.{k}' in saved]
    assert len(loaded) > 20 and all(torch.equal(own[k], saved[f'backbone.{k}']) for k in loaded)
    assert {k for k in own if k not in loaded} <= {k for k in own if k.startswith('outnorm')}
