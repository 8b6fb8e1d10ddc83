"""End to end on CPU through tools/train.py and tools/test.py: the demo config trains a few iterations,
validates (EMA and raw weights), saves; the saved checkpoint is reloaded and evaluated again, with each
pick of weights, to the very numbers of the validation. In-process, the demo model's loss falls when it
fits one batch.
"""
import glob
import json
import os.path as osp
import pickle

import pytest
import torch

from cls_testlib import build_runner, load_config
from repo_testlib import run_python as run

DEMO = 'configs/classification/vmamba_mini_demo.py'
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def data_options(root):
    """A 6-class demo set with 2 training and 1 validation image per class, written to ``root``."""
    demo = dict(train_per_class=2, val_per_class=1)
    return [f'{loader}.dataset.data_root={root}' for loader in LOADERS] + \
           [f'{loader}.dataset.demo_cfg.{k}={v}' for loader in LOADERS for k, v in demo.items()]


def json_records(pattern):
    records = []
    for path in glob.glob(pattern):
        with open(path) as f:
            records += [json.loads(line) for line in f if line.strip()]
    return records


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Two epochs of one iteration (batch 12; the schedule needs a warm-up epoch), each validated and saved.

    The data folder does not exist yet: the demo dataset writes it on first use."""
    tmp = tmp_path_factory.mktemp('cls_e2e')
    data, work = str(tmp / 'data'), str(tmp / 'work')
    run('tools/train.py', DEMO, '--work-dir', work, '--cfg-options', 'train_cfg.max_epochs=2',
        'train_cfg.val_interval=1', 'default_hooks.checkpoint.interval=1', 'default_hooks.logger.interval=1',
        'train_dataloader.batch_size=12', *data_options(data))
    records = json_records(osp.join(work, '*', 'vis_data', 'scalars.json'))
    val = [r for r in records if 'accuracy/top1' in r]
    assert len(val) == 2
    return dict(tmp=tmp, data=data, work=work, checkpoint=osp.join(work, 'epoch_2.pth'), val=val[-1],
                train=[r for r in records if 'loss' in r])


def test_training_logs_losses_and_validates_both_weights(trained):
    assert osp.isfile(trained['checkpoint'])
    assert len(trained['train']) == 2 and all(0 < r['loss'] < 10 for r in trained['train'])
    for key in ('accuracy/top1', 'accuracy/top5', 'accuracy/top1_origin', 'accuracy/top5_origin'):
        assert 0 <= trained['val'][key] <= 100
    assert trained['val']['accuracy/top5'] >= trained['val']['accuracy/top1']


@pytest.fixture(scope='module')
def tested(trained):
    """tools/test.py on the saved checkpoint, once with each pick of weights: metrics and dumped scores."""
    results = {}
    for weights in ('ema', 'raw'):
        out_dir = trained['tmp'] / f'test_{weights}'
        run('tools/test.py', DEMO, trained['checkpoint'], '--work-dir', str(out_dir),
            '--out', str(out_dir / 'preds.pkl'),
            '--cfg-options', f'default_hooks.checkpoint_loader.weights={weights}', *data_options(trained['data']))
        (metrics,) = json_records(str(out_dir / '*' / '*.json'))
        with open(out_dir / 'preds.pkl', 'rb') as f:
            predictions = pickle.load(f)
        scores = torch.stack([torch.as_tensor(p['pred_score']) for p in predictions])
        results[weights] = dict(metrics=metrics, scores=scores)
    return results


@pytest.mark.parametrize('weights,val_suffix', [('ema', ''), ('raw', '_origin')])
def test_reloaded_checkpoint_evaluates_to_the_same_numbers(trained, tested, weights, val_suffix):
    """EMA weights give the validation's accuracy/top1, raw weights its accuracy/top1_origin."""
    metrics = tested[weights]['metrics']
    for k in ('top1', 'top5'):
        assert metrics[f'accuracy/{k}'] == pytest.approx(trained['val'][f'accuracy/{k}{val_suffix}'], abs=1e-4)
    assert 'accuracy/top1_origin' not in metrics  # tested once, with the picked weights


def test_dumped_predictions_are_those_of_the_picked_weights(tested):
    ema, raw = tested['ema']['scores'], tested['raw']['scores']
    assert ema.shape == raw.shape == (6, 6)  # one validation image per class, 6 classes
    torch.testing.assert_close(ema.sum(1), torch.ones(6))
    assert not torch.allclose(ema, raw, atol=1e-4)


def test_demo_model_fits_one_batch(tmp_path):
    """The demo classifier, optimizer and loss, in-process: a few steps on one batch lower its loss."""
    torch.manual_seed(0)
    cfg = load_config(DEMO.split('/')[-1])
    for loader in LOADERS:
        cfg[loader].dataset.data_root = str(tmp_path / 'data')
        cfg[loader].dataset.demo_cfg.update(train_per_class=2, val_per_class=1)
    cfg.train_dataloader.batch_size = 6
    (crop,) = [t for t in cfg.train_dataloader.dataset.pipeline if t['type'] == 'RandomResizedCrop']
    crop.scale = 32  # smaller inputs, for speed
    runner = build_runner(cfg, tmp_path / 'work')
    optim_wrapper = runner.build_optim_wrapper(cfg.optim_wrapper)
    batch = next(iter(runner.build_dataloader(cfg.train_dataloader)))
    runner.model.train()
    losses = [runner.model.train_step(batch, optim_wrapper)['loss'].item() for _ in range(6)]
    assert losses[-1] < 0.7 * losses[0], losses
