"""Shared pieces of the tests/tools/test_reliability_*.py tests: the three demo configs shrunk to a
VMamba of 8-64 channels and a handful of images, so that a training iteration takes well under a second on
CPU, and helpers to run tools/train.py in-process or as a subprocess and read back its losses."""
import glob
import json
import os.path as osp

import pytest

from repo_testlib import CONFIGS

_COMMON = '''
val_dataloader = None
val_cfg = None
val_evaluator = None
'''

SEG = '''
_base_ = [{configs!r} + '/segmentation/upernet_vmamba_tiny_ade20k_demo.py']
model = dict(backbone=dict(arch=dict(dims=8, depths=(1, 1, 1, 1), _delete_=True)),
             decode_head=dict(in_channels=[8, 16, 32, 64], channels=8),
             auxiliary_head=dict(in_channels=32, channels=8))
train_dataloader = dict(batch_size=2, num_workers={workers}, persistent_workers={persist},
                        dataset=dict(data_root={data!r}, demo_cfg=dict(num_train=4, num_val=1)))
test_dataloader = dict(dataset=dict(data_root={data!r}, demo_cfg=dict(num_train=4, num_val=1)))
train_cfg = dict(max_iters={length}, val_interval=1000)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval={interval}, max_keep_ckpts={keep}))
''' + _COMMON

DET = '''
_base_ = [{configs!r} + '/detection/maskrcnn_vmamba_tiny_demo.py']
model = dict(backbone=dict(arch=dict(dims=8, depths=(1, 1, 1, 1), _delete_=True)),
             neck=dict(in_channels=[8, 16, 32, 64], out_channels=16),
             rpn_head=dict(in_channels=16, feat_channels=16),
             roi_head=dict(bbox_head=dict(in_channels=16, fc_out_channels=32),
                           bbox_roi_extractor=dict(out_channels=16),
                           mask_roi_extractor=dict(out_channels=16),
                           mask_head=dict(in_channels=16, conv_out_channels=16)),
             train_cfg=dict(rcnn=dict(sampler=dict(num=16))))
_data = dict(data_root={data!r}, generate=dict(num_train=4, num_val=2, image_size=64, max_objects=2, seed=0))
_train = _base_.train_pipeline
_train[2].scale = (64, 64)
train_dataloader = dict(batch_size=2, num_workers={workers}, persistent_workers={persist},
                        dataset=dict(pipeline=_train, **_data))
test_dataloader = dict(dataset=_data)
test_evaluator = dict(ann_file={data!r} + '/annotations/instances_val.json')
train_cfg = dict(max_epochs={length}, val_interval=1000)
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=3)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval={interval}, max_keep_ckpts={keep}))
''' + _COMMON

CLS = '''
_base_ = [{configs!r} + '/classification/vmamba_mini_demo.py']
model = dict(backbone=dict(arch=dict(dims=8, depths=(1, 1, 1, 1), _delete_=True)), head=dict(in_channels=64))
_data = dict(data_root={data!r}, demo_cfg=dict(train_per_class=2, val_per_class=1))
_train = _base_.train_pipeline
_train[1].scale = 32
train_dataloader = dict(batch_size=4, num_workers={workers}, persistent_workers={persist},
                        dataset=dict(pipeline=_train, **_data))
test_dataloader = dict(dataset=_data)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval={interval}, max_keep_ckpts={keep},
                                                              save_best=None, by_epoch=BY_EPOCH))
''' + _COMMON

CLS_EPOCH = CLS.replace('BY_EPOCH', 'True') + '''
train_cfg = dict(max_epochs={length}, val_interval=1000)
'''
# Classification on mmengine's IterBasedTrainLoop with an InfiniteSampler (as the ADE20K configs train).
CLS_ITER = CLS.replace('BY_EPOCH', 'False') + '''
train_dataloader.update(sampler=dict(type='InfiniteSampler', shuffle=True, _delete_=True))
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters={length}, val_interval=1000)
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=3)]
'''

TEMPLATES = dict(seg=SEG, det=DET, cls=CLS_EPOCH, cls_iter=CLS_ITER)


def write_config(folder, task, data, workers=0, length=4, interval=2, keep=1, extra=''):
    """A shrunk demo config of ``task`` (seg, det, cls, cls_iter) in ``folder``; returns its path.

    ``length`` is iterations (seg, cls_iter) or epochs (det: 2 iterations each; cls: 3 iterations each).
    With workers, they are persistent (as in the full-size configs): their random state carries over epochs."""
    text = TEMPLATES[task].format(configs=CONFIGS, data=str(data), workers=workers, persist=workers > 0,
                                  length=length,
                                  interval=interval, keep=keep) + extra
    path = osp.join(str(folder), f'{task}_w{workers}.py')
    with open(path, 'w') as f:
        f.write(text)
    return path


def losses(work_dir):
    """{iteration: the logged record} of every training iteration in ``work_dir`` (all runs in it)."""
    records = {}
    for path in sorted(glob.glob(osp.join(str(work_dir), '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                if 'loss' in record:
                    records[record['iter']] = record
    return records


def exit_message(func, argv):
    """The one-line ``error: ...`` a tool's ``main(argv)`` exits with (no traceback)."""
    with pytest.raises(SystemExit) as info:
        func(argv)
    message = info.value.code
    assert isinstance(message, str) and message.startswith('error: '), message
    assert '\n' not in message and 'Traceback' not in message, message
    return message


def names(name):
    """Options giving a run its own experiment and visualizer names (mmengine's are process-global)."""
    return ['--cfg-options', f'experiment_name={name}', f'visualizer.name={name}']
