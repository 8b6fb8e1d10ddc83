"""Exact ``--resume``: the data of every iteration is a function of (seed, position in the data stream).

What a training step sees is decided by three random streams, and mmengine restores none of them on resume:

* the sample order: mmengine's samplers derive it from the seed (and the epoch), so it is reproducible,
  provided the resumed run has the same seed (:func:`vmamba.engine.resume.check_resume` sees to that);
* the augmentations: drawn from the global ``random``/numpy/torch generators of whichever process loads
  the sample (the main process with ``num_workers=0``, a worker otherwise, each seeded once when it starts);
* the model's own randomness (drop-path, RoI sampling, batch augmentations in the data preprocessor), drawn
  in the main process; :class:`StepSeedHook` reseeds it from (seed, iteration) before
  every step (``tools/train.py`` adds it to every run, :func:`add_step_seed_hook`).

:class:`ExactBatchSampler` wraps the training loader's (batch) sampler and tags every index with its position
``(epoch, batch, slot)``; :class:`TrackedDataset` wraps the training set and, before loading a sample, seeds
the generators of the process that loads it from ``(seed, rank, epoch, batch, slot)``. So an augmentation
no longer depends on which process drew it or how many samples that process drew before, which makes
``num_workers=0`` and ``num_workers>0`` runs resume exactly alike (the two give different augmentations
from each other only in so far as worker processes are not involved at all: they do not, the seeds are the
same). :class:`ExactIterBasedTrainLoop` replaces mmengine's ``IterBasedTrainLoop``, which on resume loads
and augments every batch it skips; it advances the batch sampler instead, without loading anything.

:class:`TrackedDataset` also names the file behind a sample that fails to load (a truncated image or label
map) and the annotation file behind a dataset that fails to parse; ``tools/test.py`` uses it for that alone.

:class:`ExactEpochBasedTrainLoop` replaces mmengine's ``EpochBasedTrainLoop``, which restarts the epoch of a
checkpoint saved in its middle (by a preemption, :mod:`.preemption`, or an iteration-interval checkpoint
hook); it continues from the batch after the checkpoint's, the same way.

Limits: samplers other than mmengine's ``DefaultSampler``/``InfiniteSampler`` (and mmdet's
``AspectRatioBatchSampler`` on top) must derive their order from their seed and epoch alone.
"""
import json
import os.path as osp
import random

import numpy as np
import torch
from mmengine.dataset import InfiniteSampler
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import DATA_SAMPLERS, DATASETS, HOOKS, LOOPS
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from mmengine.runner.loops import _InfiniteDataloaderIterator
from torch.utils.data import BatchSampler

from vmamba.errors import ToolError

__all__ = ['DataFileError', 'KeyedIndex', 'TrackedDataset', 'ExactBatchSampler', 'ExactIterBasedTrainLoop',
           'ExactEpochBasedTrainLoop', 'StepSeedHook', 'add_step_seed_hook', 'make_resume_exact', 'track_data_errors']


class DataFileError(ToolError):
    """A data file (image, label map, annotation file) that cannot be read."""


class KeyedIndex(int):
    """A dataset index carrying its position ``key`` in the data stream (it travels to worker processes)."""

    def __new__(cls, index, key):
        self = super().__new__(cls, index)
        self.key = key
        return self

    def __reduce__(self):
        return KeyedIndex, (int(self), self.key)


def seed_all(*numbers):
    """Seed ``random``, numpy and torch from a tuple of integers."""
    state = np.random.SeedSequence([int(n) for n in numbers]).generate_state(2, dtype=np.uint32)
    random.seed(int(state[0]))
    np.random.seed(int(state[0]))
    torch.manual_seed(int(state[0]) << 32 | int(state[1]))


def _sample_files(dataset, index):
    """The file names a dataset reads for sample ``index`` (for error messages)."""
    try:
        info = dataset.get_data_info(index)
    except Exception:  # a dataset without data infos: the message then gives the index alone
        return []
    return [f'{k}={v}' for k, v in info.items() if isinstance(v, str) and (k.endswith('path') or k == 'file_name')]


def _annotation_file(cfg):
    ann = cfg.get('ann_file') if isinstance(cfg, dict) else None
    if not ann:
        return None
    root = cfg.get('data_root') or ''
    return ann if osp.isabs(ann) else osp.join(root, ann)


_OWN = ('dataset', 'seed', 'rank', 'split')


@DATASETS.register_module()
class TrackedDataset:
    """Wraps a dataset (config or object): names the file behind a sample that fails to load and, given a
    ``seed``, seeds the loading process from a :class:`KeyedIndex`'s position before each sample.

    Every other attribute (``metainfo``, ``pipeline``, ``get_data_info`` ...) is the wrapped dataset's.
    """

    def __init__(self, dataset, seed=None, split='training'):
        object.__setattr__(self, 'seed', seed)
        object.__setattr__(self, 'rank', get_rank())
        object.__setattr__(self, 'split', split)
        if isinstance(dataset, dict):
            ann = _annotation_file(dataset)
            try:
                dataset = DATASETS.build(dataset)
            except json.JSONDecodeError as err:
                where = f'the annotation file {ann}' if ann else 'an annotation file'
                raise DataFileError(f'Cannot parse {where} of the {split} set: it is not valid JSON ({err}). '
                                    'Restore the file (or regenerate it).') from err
        object.__setattr__(self, 'dataset', dataset)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, idx):
        key = getattr(idx, 'key', None)
        if key is not None and self.seed is not None:
            seed_all(self.seed, self.rank, *key)
        try:
            return self.dataset[int(idx)]
        except Exception as err:
            files = ', '.join(_sample_files(self.dataset, int(idx))) or 'no file names known'
            raise DataFileError(f'Cannot load {self.split} sample {int(idx)} ({files}): {type(err).__name__}: '
                                f'{err}. Check or replace that file (or remove it from the data set).') from err

    def __getattr__(self, name):
        if name in _OWN or name.startswith('__'):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __setattr__(self, name, value):
        if name in _OWN:
            object.__setattr__(self, name, value)
        else:  # e.g. hooks that switch the pipeline
            setattr(self.dataset, name, value)


@DATA_SAMPLERS.register_module()
class ExactBatchSampler:
    """Batches of :class:`KeyedIndex` ``(epoch, batch, slot)``; can restart its stream ``skip`` batches in.

    Args:
        sampler: the loader's sampler (built by the Runner).
        batch_size: the loader's batch size.
        batch_sampler: the config's own batch sampler (a dict, e.g. mmdet's ``AspectRatioBatchSampler``),
            or None for torch's ``BatchSampler``.
        drop_last: for torch's ``BatchSampler``.
    """

    def __init__(self, sampler, batch_size, batch_sampler=None, drop_last=False):
        if isinstance(batch_sampler, dict):
            batch_sampler = DATA_SAMPLERS.build(batch_sampler, default_args=dict(sampler=sampler,
                                                                                 batch_size=batch_size))
        elif batch_sampler is None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        self.batch_sampler = batch_sampler
        self.sampler = sampler  # where mmengine's hooks call set_epoch
        self.batch_size = batch_size
        self._skip = 0

    def restart(self, skip):
        """The next iteration starts from the beginning of the epoch's stream, ``skip`` batches in."""
        if isinstance(self.sampler, InfiniteSampler):
            self.sampler.indices = self.sampler._indices_of_rank()  # it is one generator for the whole run
        if hasattr(self.batch_sampler, '_aspect_ratio_buckets'):  # mmdet: partial batches of the old stream
            self.batch_sampler._aspect_ratio_buckets = [[] for _ in self.batch_sampler._aspect_ratio_buckets]
        self._skip = skip

    def __iter__(self):
        epoch = getattr(self.sampler, 'epoch', 0)
        skip, self._skip = self._skip, 0
        for b, batch in enumerate(self.batch_sampler):
            if b >= skip:
                yield [KeyedIndex(i, (epoch, b, j)) for j, i in enumerate(batch)]

    def __len__(self):
        return len(self.batch_sampler)


@LOOPS.register_module()
class ExactIterBasedTrainLoop(IterBasedTrainLoop):
    """mmengine's ``IterBasedTrainLoop`` that resumes by advancing the batch sampler, loading nothing.

    (mmengine's loop loads and augments the batches it skips, which is slow and shifts the random state.)
    """

    def run(self):
        self.runner.call_hook('before_train')
        self.runner.call_hook('before_train_epoch')
        if self._iter > 0:
            self._fast_forward(self._iter)
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            data_batch = next(self.dataloader_iterator)
            self.run_iter(data_batch)
            self._decide_current_val_interval()
            if (self.runner.val_loop is not None and self._iter >= self.val_begin
                    and (self._iter % self.val_interval == 0 or self._iter == self._max_iters)):
                self.runner.val_loop.run()
        self.runner.call_hook('after_train_epoch')
        self.runner.call_hook('after_train')
        return self.runner.model

    def _fast_forward(self, iters):
        batches = _batch_sampler(self)
        epochs, skip = 0, iters
        if not isinstance(batches.sampler, InfiniteSampler):  # a finite sampler restarts every len() batches
            epochs, skip = divmod(iters, len(batches))
            if hasattr(batches.sampler, 'set_epoch'):
                batches.sampler.set_epoch(epochs)
        batches.restart(skip)
        self.runner.logger.info(f'Resuming at iteration {iters}: the data stream restarts {iters} batches in '
                                '(nothing is loaded for the skipped batches).')
        self.dataloader_iterator = _InfiniteDataloaderIterator(self.dataloader)
        self.dataloader_iterator._epoch = epochs


def _batch_sampler(loop):
    batches = loop.dataloader.batch_sampler
    if not isinstance(batches, ExactBatchSampler):
        raise ToolError(f'{type(loop).__name__} needs the training loader\'s batch sampler to be an '
                        'ExactBatchSampler (tools/train.py sets it up; see make_resume_exact).')
    return batches


@LOOPS.register_module()
class ExactEpochBasedTrainLoop(EpochBasedTrainLoop):
    """mmengine's ``EpochBasedTrainLoop`` that resumes a checkpoint saved in the middle of an epoch exactly.

    The batches of the epoch done before the checkpoint are ``iter - epoch * len(loader)``; the epoch's
    data stream restarts that many batches in (nothing is loaded for them) and the batch index the hooks
    see continues from there. Every epoch must have the same number of batches (the same config).
    """

    def run(self):
        self._skip = self._iter - self._epoch * len(self.dataloader) if self._iter > 0 else 0
        if not 0 <= self._skip <= len(self.dataloader):
            raise ToolError(f'Cannot resume at iteration {self._iter} of epoch {self._epoch + 1}: the epoch has '
                            f'{len(self.dataloader)} batches (the batch size or data changed since the checkpoint).')
        return super().run()

    def run_epoch(self):
        skip, self._skip = self._skip, 0
        if skip:
            _batch_sampler(self).restart(skip)
            self.runner.logger.info(f'Resuming epoch {self._epoch + 1} at batch {skip + 1}: the data stream '
                                    f'restarts {skip} batches in (nothing is loaded for the skipped batches).')
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        for idx, data_batch in enumerate(self.dataloader, start=skip):
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1


@HOOKS.register_module()
class StepSeedHook(Hook):
    """Re-seed ``random``, numpy and torch from (seed, iteration) before every training step.

    mmengine's ``--resume`` restores weights, optimizer, schedulers and counters, but not the random number
    generators, so the model's own randomness (drop-path, RoI sampling, batch augmentations of the data
    preprocessor) would differ after a resume. With this hook the generator state at each step is a function
    of ``(runner.seed, runner.iter)`` only. It also reseeds after each iteration and at the start of each
    epoch, for loaders that draw their augmentations in the main process. ``runner.seed`` is restored from
    the checkpoint on resume; with ``randomness.diff_rank_seed=True`` each rank gets its own stream. The data
    side is covered by :class:`TrackedDataset` and :class:`ExactBatchSampler`.
    """

    priority = 'LOWEST'  # run after every other hook of the same stage

    def _reseed(self, runner):
        rank = 0
        if runner._randomness_cfg.get('diff_rank_seed'):
            rank = get_rank()
        seed = runner.seed if runner.seed is not None else 0
        mixed = np.random.SeedSequence([seed, runner.iter, rank]).generate_state(2, dtype=np.uint32)
        random.seed(int(mixed[0]))
        np.random.seed(int(mixed[0]))
        torch.manual_seed(int(mixed[0]) << 32 | int(mixed[1]))

    def before_train_epoch(self, runner):
        self._reseed(runner)

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self._reseed(runner)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self._reseed(runner)


def add_step_seed_hook(cfg):
    """Append :class:`StepSeedHook` to the config's ``custom_hooks`` (once)."""
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(h.get('type') in ('StepSeedHook', StepSeedHook) for h in hooks):
        hooks.append(dict(type='StepSeedHook'))
    cfg.custom_hooks = hooks


def _wrap_dataset(loader, split, seed=None):
    dataset = loader.get('dataset')
    if isinstance(dataset, dict) and dataset.get('type') not in ('TrackedDataset', TrackedDataset):
        loader['dataset'] = dict(type='TrackedDataset', dataset=dataset, seed=seed, split=split)


def make_resume_exact(cfg):
    """Set the config's training up for an exact ``--resume`` (see the module docstring).

    The seed is fixed here when the config leaves it to chance (mmengine would draw one), so that the
    per-sample seeds are known when the loader is built; a resumed run takes the checkpoint's.
    """
    randomness = cfg.get('randomness') or {}
    if randomness.get('seed') is None:
        randomness['seed'] = int(np.random.SeedSequence().generate_state(1)[0] >> 1)
        cfg.randomness = randomness
    loader = cfg.get('train_dataloader')
    if not loader:
        return
    _wrap_dataset(loader, 'training', seed=randomness['seed'])
    batch_sampler = loader.get('batch_sampler')
    if not (isinstance(batch_sampler, dict) and batch_sampler.get('type') in ('ExactBatchSampler',
                                                                             ExactBatchSampler)):
        loader['batch_sampler'] = dict(type='ExactBatchSampler', batch_sampler=batch_sampler,
                                       drop_last=loader.pop('drop_last', False))
    train_cfg = cfg.get('train_cfg') or {}
    if train_cfg.get('type') in ('IterBasedTrainLoop', IterBasedTrainLoop) or (
            'type' not in train_cfg and train_cfg.get('by_epoch') is False):
        train_cfg.pop('by_epoch', None)
        train_cfg.pop('_scope_', None)
        train_cfg['type'] = 'ExactIterBasedTrainLoop'
    elif train_cfg.get('type') in ('EpochBasedTrainLoop', EpochBasedTrainLoop) or (
            'type' not in train_cfg and train_cfg.get('by_epoch')):
        train_cfg.pop('by_epoch', None)
        train_cfg.pop('_scope_', None)
        train_cfg['type'] = 'ExactEpochBasedTrainLoop'


def track_data_errors(cfg, loaders=('val_dataloader', 'test_dataloader')):
    """Wrap the evaluation sets in :class:`TrackedDataset` (named data-file errors, no seeding)."""
    for key in loaders:
        if cfg.get(key):
            _wrap_dataset(cfg[key], 'validation' if key == 'val_dataloader' else 'test')
