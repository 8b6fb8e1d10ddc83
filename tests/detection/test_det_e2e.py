"""Detection end to end on CPU: the demo config through tools/train.py, tools/test.py, ``--resume``, and
mmdet's own tools/train.py.

A config written here inherits configs/detection/maskrcnn_vmamba_tiny_demo.py and shrinks it to 4 training
and 4 validation images of 64x64, so that 2 epochs of 2 iterations take about a
minute. What is checked: training logs finite losses and a numeric bbox/segm mAP; tools/test.py reproduces
that mAP from the checkpoint and dumps the predictions; resuming from the epoch-1 checkpoint continues
exactly (iteration count, optimizer and scheduler state, the same losses, the same final weights).
"""
import glob
import json
import math
import os.path as osp
import pickle

import pytest
import torch

import mmdet
from repo_testlib import REPO, run_python as run

DEMO = osp.join(REPO, 'configs', 'detection', 'maskrcnn_vmamba_tiny_demo.py')
EPOCHS, ITERS_PER_EPOCH = 2, 2

CONFIG = '''
_base_ = [{demo!r}]
_data = dict(data_root={root!r}, generate=dict(num_train=4, num_val=4, image_size=64, max_objects=2, seed=0))
_train, _test = _base_.train_pipeline, _base_.test_pipeline  # the demo's, at 64 px
_train[2].scale = _test[1].scale = (64, 64)
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=_train, **_data))
val_dataloader = dict(batch_size=2, dataset=dict(pipeline=_test, **_data))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file={root!r} + 'annotations/instances_val.json')
test_evaluator = val_evaluator
model = dict(train_cfg=dict(rpn_proposal=dict(max_per_img=100), rcnn=dict(sampler=dict(num=64))),
             test_cfg=dict(rpn=dict(max_per_img=100)))
train_cfg = dict(max_epochs={epochs}, val_interval={epochs})
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=3))
'''


def scalars(work_dir):
    """The records mmengine's LocalVisBackend wrote (one JSON object per line)."""
    files = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    assert len(files) == 1, files
    with open(files[0]) as f:
        return [json.loads(line) for line in f]


def train_records(work_dir):
    return {r['iter']: r for r in scalars(work_dir) if 'loss' in r}


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('det_e2e')
    config = tmp / 'demo_small.py'
    config.write_text(CONFIG.format(demo=DEMO, root=str(tmp / 'data') + '/', epochs=EPOCHS))
    return dict(tmp=tmp, config=str(config))


@pytest.fixture(scope='module')
def trained(setup):
    """An uninterrupted run; the data folder does not exist yet, so the dataset writes it."""
    work = str(setup['tmp'] / 'full')
    run(osp.join(REPO, 'tools', 'train.py'), setup['config'], '--work-dir', work, cwd=str(setup['tmp']))
    return work


def test_training_logs_finite_losses_and_numeric_map(trained):
    records = train_records(trained)
    assert sorted(records) == list(range(1, EPOCHS * ITERS_PER_EPOCH + 1))
    for record in records.values():
        for key in ('loss', 'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'loss_mask'):
            assert math.isfinite(record[key]) and record[key] >= 0, (key, record)
    metrics = [r for r in scalars(trained) if 'coco/bbox_mAP' in r]
    assert len(metrics) == 1
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'coco/segm_mAP_50'):
        assert isinstance(metrics[0][key], float) and 0.0 <= metrics[0][key] <= 1.0
    for epoch in range(1, EPOCHS + 1):
        assert osp.isfile(osp.join(trained, f'epoch_{epoch}.pth'))


def test_test_tool_reproduces_the_validation_map_and_dumps_predictions(setup, trained):
    out = str(setup['tmp'] / 'preds.pkl')
    work = str(setup['tmp'] / 'test')
    log = run(osp.join(REPO, 'tools', 'test.py'), setup['config'], osp.join(trained, f'epoch_{EPOCHS}.pth'),
              '--work-dir', work, '--out', out, cwd=str(setup['tmp']))
    assert 'coco/bbox_mAP' in log
    val = [r for r in scalars(trained) if 'coco/bbox_mAP' in r][0]
    with open(glob.glob(osp.join(work, '*', '*.json'))[0]) as f:
        tested = json.load(f)
    for key in ('coco/bbox_mAP', 'coco/segm_mAP', 'coco/bbox_mAP_50'):
        assert tested[key] == pytest.approx(val[key], abs=1e-4)
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 4
    assert {'bboxes', 'scores', 'labels', 'masks'} <= set(preds[0]['pred_instances'])


def test_resume_continues_exactly(setup, trained):
    """Resume from the epoch-1 checkpoint (what an interrupted run leaves) and compare with the full run."""
    work = str(setup['tmp'] / 'resumed')
    run(osp.join(REPO, 'tools', 'train.py'), setup['config'], '--work-dir', work,
        '--resume', osp.join(trained, 'epoch_1.pth'), cwd=str(setup['tmp']))
    full, resumed = train_records(trained), train_records(work)
    assert sorted(resumed) == list(range(ITERS_PER_EPOCH + 1, EPOCHS * ITERS_PER_EPOCH + 1))
    for it, record in resumed.items():
        for key in ('loss', 'loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask', 'lr'):
            assert record[key] == pytest.approx(full[it][key], rel=1e-5, abs=1e-7), (it, key)

    load = dict(map_location='cpu', weights_only=False)
    a = torch.load(osp.join(trained, f'epoch_{EPOCHS}.pth'), **load)
    b = torch.load(osp.join(work, f'epoch_{EPOCHS}.pth'), **load)
    assert a['meta']['iter'] == b['meta']['iter'] == EPOCHS * ITERS_PER_EPOCH
    assert a['meta']['epoch'] == b['meta']['epoch'] == EPOCHS
    assert a['param_schedulers'] == b['param_schedulers']
    opt_a, opt_b = a['optimizer'], b['optimizer']
    assert opt_a['param_groups'] == opt_b['param_groups']
    assert opt_a['state'].keys() == opt_b['state'].keys()
    for index, state in opt_a['state'].items():
        for key, value in state.items():
            assert torch.allclose(value, opt_b['state'][index][key], rtol=1e-5, atol=1e-8), (index, key)
    for name, value in a['state_dict'].items():
        assert torch.allclose(value, b['state_dict'][name], rtol=1e-5, atol=1e-7), name


def test_config_runs_with_mmdets_own_train_tool(setup, trained):
    """The configs need nothing from our tools: mmdet's tools/train.py (shipped in the wheel) trains them."""
    mmdet_train = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'train.py')
    work = str(setup['tmp'] / 'mmdet_tool')
    run(mmdet_train, setup['config'], '--work-dir', work, '--cfg-options', 'train_cfg.max_epochs=1',
        'train_dataloader.dataset.indices=2', 'default_hooks.checkpoint.interval=100',
        'default_hooks.checkpoint.save_last=False', cwd=str(setup['tmp']))
    records = train_records(work)
    assert sorted(records) == [1] and math.isfinite(records[1]['loss'])
