"""End to end on CPU: the demo config through tools/train.py and tools/test.py (and mmseg's own train tool),
then single-image inference with ``mmseg.apis``.

The runs are a few iterations on a handful of synthetic images; what is checked is that every stage works
and produces real numbers (a numeric mIoU, a label map of the input's size), and, in-process, that the
loss of the demo model falls when it fits one batch.
"""
import glob
import json
import math
import os
import os.path as osp
import re
import shutil
import tempfile

import cv2
import numpy as np
import pytest
import torch

from vmamba.mmstack import installed_stack
from repo_testlib import REPO, run_python as run

DEMO = 'configs/segmentation/upernet_vmamba_tiny_ade20k_demo.py'
ITERS = 3
VAL_IMAGES = 2


def data_options(root, **demo_cfg):
    opts = [f'{loader}.dataset.data_root={root}' for loader in ('train_dataloader', 'val_dataloader',
                                                                'test_dataloader')]
    return opts + [f'train_dataloader.dataset.demo_cfg.{k}={v}' for k, v in demo_cfg.items()]


def scalars(work_dir):
    """The records mmengine's LocalVisBackend wrote (one JSON object per line)."""
    files = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    assert len(files) == 1, files
    with open(files[0]) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope='module')
def trained():
    """tools/train.py on the demo config; the data folder does not exist yet, so the dataset writes it."""
    # Our own folder rather than tmp_path: pytest prunes old base temp folders when other sessions start,
    # which could pull the checkpoint from under the later tests of a long module.
    tmp = tempfile.mkdtemp(prefix='vmamba-seg-e2e-')
    data, work = osp.join(tmp, 'data'), osp.join(tmp, 'work')
    try:
        run('tools/train.py', DEMO, '--work-dir', work, '--cfg-options', f'train_cfg.max_iters={ITERS}',
            'default_hooks.logger.interval=1', *data_options(data, num_train=6, num_val=VAL_IMAGES))
        yield dict(data=data, work=work, checkpoint=osp.join(work, f'iter_{ITERS}.pth'))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_train_logs_losses_and_a_numeric_miou(trained):
    assert osp.isfile(trained['checkpoint'])
    records = scalars(trained['work'])
    losses = [r['loss'] for r in records if 'loss' in r]
    assert len(losses) == ITERS and all(math.isfinite(v) for v in losses)
    (metrics,) = [r for r in records if 'mIoU' in r]
    assert 0.0 <= metrics['mIoU'] <= 100.0 and 0.0 <= metrics['aAcc'] <= 100.0
    assert len(os.listdir(osp.join(trained['data'], 'images', 'validation'))) == VAL_IMAGES


def test_test_tool_multiscale_flip(trained, tmp_path):
    """tools/test.py --tta: six scales x flip, evaluated with IoUMetric."""
    out = run('tools/test.py', DEMO, trained['checkpoint'], '--tta', '--work-dir', str(tmp_path),
              '--cfg-options', *data_options(trained['data']))
    found = re.findall(r'mIoU: (\d+\.\d+)', out)
    assert found, out[-2000:]
    assert 0.0 <= float(found[-1]) <= 100.0


def test_inference_returns_a_label_map_of_the_input_size(trained):
    from mmseg.apis import inference_model, init_model

    from vmamba.demo.ade20k import DEMO_CLASSES
    model = init_model(osp.join(REPO, DEMO), trained['checkpoint'], device='cpu')
    assert list(model.dataset_meta['classes']) == list(DEMO_CLASSES)
    path = sorted(glob.glob(osp.join(trained['data'], 'images', 'validation', '*.jpg')))[0]
    # From a file first: mmseg's inference_model switches the model's test pipeline to LoadImageFromNDArray for
    # good once it is given an array, after which a path no longer loads (mmseg 1.2.2 behaviour).
    from_file = inference_model(model, path)
    assert from_file.pred_sem_seg.data.shape == (1, 96, 128)
    image = cv2.resize(cv2.imread(path), (101, 75))  # an odd size, not the demo's 96x128
    result = inference_model(model, image)
    labels = result.pred_sem_seg.data
    assert labels.shape == (1, 75, 101)
    assert labels.min() >= 0 and labels.max() < len(DEMO_CLASSES)
    assert result.seg_logits.data.shape == (len(DEMO_CLASSES), 75, 101)


@pytest.mark.skipif(installed_stack() == 'onedl', reason="the onedl fork's mmengine looks mmseg:: bases up under "
                    "the distribution mmsegmentation; only the project's tools (which import vmamba) map it")
def test_runs_with_mmsegs_own_train_tool(tmp_path):
    """The configs are plain mmseg configs: mmseg's unmodified tools/train.py trains them too (upstream stack)."""
    import mmseg
    tool = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools', 'train.py')
    run(tool, DEMO, '--work-dir', str(tmp_path / 'work'), '--cfg-options', 'train_cfg.max_iters=2',
        *data_options(str(tmp_path / 'data'), num_train=4, num_val=VAL_IMAGES))
    assert osp.isfile(tmp_path / 'work' / 'iter_2.pth')
    assert any('mIoU' in r for r in scalars(str(tmp_path / 'work')))


def test_demo_model_fits_a_batch(tmp_path):
    """The loss of the demo model (real tiny backbone, demo heads) falls on one fixed batch."""
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS, MODELS

    from vmamba.demo.ade20k import generate_demo_ade20k
    torch.manual_seed(0)
    cfg = Config.fromfile(osp.join(REPO, DEMO))
    init_default_scope('mmseg')
    root = generate_demo_ade20k(tmp_path / 'data', num_train=2, num_val=1)
    dataset = DATASETS.build(dict(cfg.train_dataloader.dataset, data_root=root))
    batch = [dataset[i] for i in range(2)]
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.init_weights()
    data = model.data_preprocessor(dict(inputs=[b['inputs'] for b in batch],
                                        data_samples=[b['data_samples'] for b in batch]), training=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    history = []
    for _ in range(20):
        losses = model(**data, mode='loss')
        loss = losses['decode.loss_ce'] + losses['aux.loss_ce']
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert np.isfinite(history).all()
    assert min(history[-3:]) < 0.6 * history[0], history
