"""``--resume`` continues exactly: after resuming, every loss term of every iteration is bit-identical to the
uninterrupted run's, for each task, on epoch-based and iteration-based loops, with and without dataloader
worker processes (vmamba/engine/exact_resume.py, with its StepSeedHook). Each sample's augmentation is seeded
from its place in the data stream, so the number of workers does not change the data either: a run resumed
without workers continues the 2-worker run exactly too.

In-process runs of tools/train.py on the demo configs shrunk to a tiny VMamba: an uninterrupted run, then a
run resumed from its middle checkpoint in a fresh work dir (what an interrupted run leaves; the kill itself
is tested in test_reliability_checkpoints.py). The training sets use random augmentations (random
resize/crop/flip/photometric distortion for segmentation, flip for detection, random resized crop for
classification), so any difference in the random state shows in the losses.
"""
import os.path as osp
import shutil

import pytest

from reliability_lib import losses, write_config

# task, run length, checkpoint interval, checkpoint to resume from, first resumed iteration
CASES = [
    ('seg', 4, 2, 'iter_2.pth', 3),   # IterBasedTrainLoop, InfiniteSampler, 4 images
    ('det', 2, 1, 'epoch_1.pth', 3),  # EpochBasedTrainLoop, AspectRatioBatchSampler, 2 iterations/epoch
    ('cls', 2, 1, 'epoch_1.pth', 4),  # EpochBasedTrainLoop, DefaultSampler, 3 iterations/epoch
]


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return tmp_path_factory.mktemp('data')


def _train(train, config, work, *extra):
    name = osp.basename(str(work)) + '_' + osp.basename(osp.dirname(str(work)))
    # Runs in one process share mmengine's named singletons (message hub, visualizer): name them apart.
    train.main([config, '--work-dir', str(work), *extra, '--cfg-options', f'experiment_name={name}',
                f'visualizer.name={name}'])


def _terms(record):
    return {k: v for k, v in record.items() if k.startswith('loss') or '.loss' in k or k == 'lr'}


@pytest.mark.parametrize('task,length,interval,ckpt,first', CASES, ids=[c[0] for c in CASES])
def test_resumed_losses_are_bit_identical(train, data, tmp_path, task, length, interval, ckpt, first):
    """The uninterrupted run has 2 (persistent) workers; it is resumed once with 2 workers, once with none."""
    full = tmp_path / 'full'
    config = write_config(tmp_path, task, data / task, workers=2, length=length, interval=interval, keep=3)
    _train(train, config, full)
    a = losses(full)
    for workers in (2, 0):
        config = write_config(tmp_path, task, data / task, workers=workers, length=length, interval=interval,
                              keep=3)
        resumed = tmp_path / f'resumed{workers}'
        resumed.mkdir()
        shutil.copy(full / ckpt, resumed / ckpt)
        _train(train, config, resumed, '--resume', str(resumed / ckpt))
        b = losses(resumed)
        assert sorted(b) == list(range(first, max(a) + 1)), (workers, sorted(a), sorted(b))
        for it in b:
            assert len(_terms(a[it])) >= 2
            assert _terms(b[it]) == _terms(a[it]), (workers, it)
