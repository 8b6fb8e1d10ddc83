"""Task-agnostic pieces of ``tools/train.py``, ``tools/test.py`` and ``tools/demo.py``.

One pair of tools serves detection (mmdet), segmentation (mmseg) and classification (mmpretrain): the
config's ``default_scope`` decides which codebase's registries the mmengine ``Runner`` builds from, so the
tools themselves import no task package. What differs between the codebases' own tools (how ``--out``,
``--show-dir`` and ``--tta`` are wired) is dispatched here on that scope. So are the fixes that make the
same configs run on a CPU-only machine:

* distributed training without CUDA: mmengine's ``init_dist`` always calls ``torch.cuda.set_device`` and
  its DDP wrapper passes ``device_ids=[LOCAL_RANK]``; both fail on CPU. We initialise a ``gloo`` process
  group ourselves (mmengine then skips its own init) and wrap with ``device_ids=None``.
* ``--amp`` without CUDA: mmengine's ``AmpOptimWrapper`` asserts a GPU; we say so plainly instead.
* ``persistent_workers=True`` with ``num_workers=0`` makes torch's DataLoader raise; we drop the flag.

Two more make runs predictable: :func:`check_data` stops a run whose data is missing with one message
(the layout the config expects and the demo config to try instead), and :class:`StepSeedHook` makes the
random state of each step a function of the iteration (the data side is in :mod:`vmamba.tasks.exact_resume`).

Everything a user can get wrong raises :class:`ToolError`, whose message the tools print without a
traceback. :func:`backbone_channels` and :func:`official_checkpoint` are for configs, so that neck widths
and checkpoint names are derived from the variant table instead of being typed again.
"""
import glob
import os
import os.path as osp
import random
import warnings
from copy import deepcopy

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from vmamba.models.variants import resolve_arch

__all__ = [
    'ToolError', 'backbone_channels', 'official_checkpoint', 'setup_dynamo_cache', 'default_work_dir',
    'apply_amp', 'apply_auto_scale_lr', 'apply_resume', 'apply_scope_defaults', 'fix_dataloaders',
    'setup_distributed', 'check_data', 'check_pretrained', 'apply_show', 'apply_tta', 'apply_out',
    'add_dump_results',
    'StepSeedHook', 'add_step_seed_hook', 'build_runner', 'CHECKPOINT_DIR',
]

#: Where configs expect the official ImageNet checkpoints (relative to the working directory).
CHECKPOINT_DIR = 'checkpoints'
#: The official release page (the files are assets of its releases).
RELEASES_URL = 'https://github.com/MzeroMiko/VMamba/releases'

_LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')

#: Where the public datasets come from, by dataset type, for the missing-data message.
DATA_SOURCES = {
    'CocoDataset': 'COCO 2017 (train2017.zip, val2017.zip, annotations_trainval2017.zip) from '
                   'https://cocodataset.org/#download',
    'ADE20KDataset': 'ADEChallengeData2016.zip (ADE20K scene parsing) from http://sceneparsing.csail.mit.edu/',
    'ImageNet': 'ImageNet-1k (ILSVRC2012) from https://image-net.org/download.php',
}


class ToolError(RuntimeError):
    """A mistake the user can fix; the tools print the message and exit with status 1."""


# ----------------------------------------------------------------------------------- config helpers
def backbone_channels(arch):
    """Channels of the four backbone outputs (stage i has ``dims * 2**i``), for neck/head ``in_channels``."""
    _, settings = resolve_arch(arch)
    return [settings['dims'] * 2**i for i in range(4)]


def official_checkpoint(arch, directory=CHECKPOINT_DIR):
    """Path of the official ImageNet checkpoint of ``arch`` under ``directory`` (the release file name)."""
    name, settings = resolve_arch(arch)
    if not settings.get('checkpoint'):
        raise ToolError(f'No official checkpoint is known for VMamba arch {name!r}.')
    return osp.join(directory, settings['checkpoint'])


# ----------------------------------------------------------------------------------- CLI -> config
def setup_dynamo_cache():
    """Honour ``DYNAMO_CACHE_SIZE_LIMIT`` (as mmdet's tools do) to bound recompilations under torch.compile."""
    limit = os.environ.get('DYNAMO_CACHE_SIZE_LIMIT')
    if limit:
        import torch._dynamo
        torch._dynamo.config.cache_size_limit = int(limit)


def default_work_dir(cfg, config_path, work_dir=None):
    """CLI ``--work-dir`` > ``work_dir`` in the config > ``./work_dirs/<config name>``."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def apply_amp(cfg):
    """Switch the optimizer wrapper to mmengine's ``AmpOptimWrapper`` (fp16 + dynamic loss scaling)."""
    if not torch.cuda.is_available():
        raise ToolError('--amp needs a CUDA GPU (mmengine\'s AmpOptimWrapper runs fp16 with a CUDA loss scaler) '
                        'and none is visible. Run without --amp on this machine.')
    wrapper = cfg.optim_wrapper
    kind = wrapper.get('type', 'OptimWrapper')
    if kind == 'AmpOptimWrapper':
        warnings.warn('--amp: the config already uses AmpOptimWrapper; nothing to change.')
        return
    if kind != 'OptimWrapper':
        raise ToolError(f'--amp only replaces a plain OptimWrapper, but the config uses {kind!r}. '
                        'Set optim_wrapper.type in the config instead.')
    wrapper.type = 'AmpOptimWrapper'
    wrapper.setdefault('loss_scale', 'dynamic')


def apply_auto_scale_lr(cfg):
    """Enable mmengine's linear LR scaling by ``total batch / auto_scale_lr.base_batch_size``."""
    scale = cfg.get('auto_scale_lr')
    if not scale or 'base_batch_size' not in scale:
        raise ToolError('--auto-scale-lr needs `auto_scale_lr = dict(enable=False, base_batch_size=N)` in the '
                        'config (N = the total batch size its learning rate was tuned for).')
    scale.enable = True


def apply_resume(cfg, resume):
    """``--resume`` alone resumes from the latest checkpoint in the work dir; ``--resume PATH`` from PATH."""
    if resume is None:
        return
    if resume == 'auto':
        cfg.resume, cfg.load_from = True, None
        return
    if '://' not in resume and not osp.isfile(resume):
        raise ToolError(f'--resume: no checkpoint file at {resume!r}.')
    cfg.resume, cfg.load_from = True, resume


def apply_scope_defaults(cfg):
    """Dataloader defaults that a codebase's own tools add and its configs rely on.

    mmpretrain's tools default ``collate_fn`` to ``default_collate`` (its configs don't set it; mmengine's
    own default is ``pseudo_collate``).
    """
    if cfg.get('default_scope') == 'mmpretrain':
        for key in _LOADERS:
            if cfg.get(key):
                cfg[key].setdefault('collate_fn', dict(type='default_collate'))


def fix_dataloaders(cfg):
    """Drop ``persistent_workers`` where ``num_workers == 0`` (torch's DataLoader rejects the pair)."""
    for key in _LOADERS:
        loader = cfg.get(key)
        if loader and loader.get('num_workers', 0) == 0 and loader.get('persistent_workers'):
            loader.persistent_workers = False


# ----------------------------------------------------------------------------------- exact resume
@HOOKS.register_module()
class StepSeedHook(Hook):
    """Re-seed ``random``, numpy and torch from (seed, iteration) before every training step.

    mmengine's ``--resume`` restores weights, optimizer, schedulers and counters, but not the random number
    generators, so the model's own randomness (drop-path, RoI sampling, batch augmentations of the data
    preprocessor) would differ after a resume. With this hook the generator state at each step is a function
    of ``(runner.seed, runner.iter)`` only. It also reseeds after each iteration and at the start of each
    epoch, for loaders that draw their augmentations in the main process. ``runner.seed`` is restored from
    the checkpoint on resume; with ``randomness.diff_rank_seed=True`` each rank gets its own stream. The data
    side (augmentations in worker processes, the batches an ``IterBasedTrainLoop`` skips on resume) is
    covered by :mod:`vmamba.tasks.exact_resume`.
    """

    priority = 'LOWEST'  # run after every other hook of the same stage

    def _reseed(self, runner):
        rank = 0
        if runner._randomness_cfg.get('diff_rank_seed'):
            from mmengine.dist import get_rank
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


# ----------------------------------------------------------------------------------- distributed
def setup_distributed(cfg):
    """Make ``--launcher pytorch`` work without CUDA: a gloo process group and CPU DDP.

    With CUDA nothing changes (mmengine initialises NCCL itself). Without it we create the process group
    before the Runner exists; the Runner sees ``is_distributed()`` and skips ``init_dist`` (which would call
    ``torch.cuda.set_device``). DDP is then built with ``device_ids=None``, the CPU form.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return
    import torch.distributed as dist
    if launcher != 'pytorch':
        raise ToolError(f'--launcher {launcher} without CUDA is not supported; on a CPU machine launch with '
                        'torchrun (--launcher pytorch, e.g. tools/dist_train.sh).')
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT') if k not in os.environ]
    if missing:
        raise ToolError(f'--launcher pytorch expects the environment torchrun sets ({", ".join(missing)} missing). '
                        'Start it as: torchrun --nproc_per_node=N tools/train.py CONFIG --launcher pytorch')
    dist_cfg = cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    dist_cfg['backend'] = 'gloo'
    if not dist.is_initialized():
        import datetime
        kwargs = {}
        if dist_cfg.get('timeout') is not None:
            kwargs['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
        dist.init_process_group(backend='gloo', **kwargs)
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    if wrapper.get('type', 'MMDistributedDataParallel') in ('MMDistributedDataParallel',
                                                            'DistributedDataParallel'):
        wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper


# ----------------------------------------------------------------------------------- data checks
def _innermost_datasets(dataset):
    """Yield the leaf dataset configs under wrappers (RepeatDataset, ConcatDataset, ClassBalanced...)."""
    if dataset is None:
        return
    if 'datasets' in dataset:
        for sub in dataset['datasets']:
            yield from _innermost_datasets(sub)
    elif 'dataset' in dataset:
        yield from _innermost_datasets(dataset['dataset'])
    else:
        yield dataset


def _expected_paths(dataset):
    """The paths a dataset config will read, joined the way mmengine's BaseDataset joins them."""
    root = dataset.get('data_root') or ''
    paths = []
    if root:
        paths.append(root)
    ann = dataset.get('ann_file')
    if ann:
        paths.append(ann if osp.isabs(ann) else osp.join(root, ann))
    prefix = dataset.get('data_prefix') or {}
    if isinstance(prefix, str):
        prefix = {'img': prefix}
    for value in prefix.values():
        if value and isinstance(value, str) and '://' not in value:
            paths.append(value if osp.isabs(value) else osp.join(root, value))
    return [p for p in paths if '://' not in p]


def _generates_own_data(dataset, scope):
    """True for dataset classes that write their data on first use (class attribute ``GENERATES_DATA``)."""
    from mmengine.registry import DATASETS
    kind = dataset.get('type')
    if not isinstance(kind, str):
        return bool(getattr(kind, 'GENERATES_DATA', False))
    try:
        with DATASETS.switch_scope_and_registry(scope) as registry:
            cls = registry.get(kind)
    except Exception:  # an unknown type is reported by the Runner, with its own message
        return False
    return bool(getattr(cls, 'GENERATES_DATA', False))


def _demo_configs(config_path):
    here = osp.dirname(osp.abspath(config_path))
    return sorted(glob.glob(osp.join(here, '*_demo.py')))


def _shown(path):
    """``path`` relative to the current directory when that is shorter, else absolute."""
    rel = osp.relpath(path)
    return path if rel.startswith('..') else rel


def check_data(cfg, config_path, loaders=_LOADERS):
    """Fail early, with one message, if the data a config names is not on disk.

    The message names what is missing (the topmost missing folder, not everything under it), the whole
    layout the config expects with the dataloaders that read each path, how to point the config elsewhere,
    and the demo config(s) next to ``config_path`` as the alternative.
    """
    scope = cfg.get('default_scope')
    users = {}  # path -> dataloaders that read it, in config order
    kinds = []
    for key in loaders:
        loader = cfg.get(key)
        if not loader or 'dataset' not in loader:
            continue
        for dataset in _innermost_datasets(loader['dataset']):
            if not _generates_own_data(dataset, scope):
                if dataset.get('type') not in kinds:
                    kinds.append(dataset.get('type'))
                for path in _expected_paths(dataset):
                    users.setdefault(path, [])
                    if key not in users[path]:
                        users[path].append(key)
    missing = [p for p in users if not osp.exists(p)]
    if not missing:
        return
    topmost = [p for p in missing
               if not any(q != p and p.startswith(q.rstrip('/') + '/') for q in missing)]
    width = max(len(p) for p in users)
    lines = [f'Data not found for {_shown(config_path)}: missing {", ".join(topmost)}',
             f'The config reads (relative paths start at the current directory, {os.getcwd()}):']
    lines += [f'  {p:<{width}}  {"MISSING " if p in missing else "ok      "} ({", ".join(k)})'
              for p, k in users.items()]
    lines.append('Put the data there (a symlink is fine), or point the config at it with --cfg-options, e.g. '
                 'train_dataloader.dataset.data_root=/path/to/data/ (and likewise for val_dataloader, '
                 'test_dataloader and the evaluators\' ann_file).')
    lines += [f'Get {DATA_SOURCES[k]}.' for k in kinds if isinstance(k, str) and k in DATA_SOURCES]
    demos = _demo_configs(config_path)
    if demos:
        lines.append('No data at hand? The built-in demo set needs no download: '
                     + ' or '.join(f'python tools/train.py {_shown(d)}' for d in demos))
    raise ToolError('\n'.join(lines))


def _pretrained_inits(node, where='model'):
    """Yield (location, init_cfg) for every ``Pretrained`` init_cfg in a model config."""
    if isinstance(node, dict):
        init = node.get('init_cfg')
        inits = init if isinstance(init, (list, tuple)) else [init]
        for item in inits:
            if isinstance(item, dict) and item.get('type') == 'Pretrained':
                yield f'{where}.init_cfg', item
        for key, value in node.items():
            if key != 'init_cfg':
                yield from _pretrained_inits(value, f'{where}.{key}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _pretrained_inits(value, f'{where}[{i}]')


def check_pretrained(cfg):
    """Fail early if a ``Pretrained`` init_cfg names a local file that is not there.

    (Without this the run would build everything, then stop deep inside ``init_weights``.) URLs and
    ``scheme://`` names are left to mmengine. Resuming skips the check: resumed weights replace the init.
    """
    if cfg.get('resume') or cfg.get('load_from'):
        return
    for where, init in _pretrained_inits(cfg.get('model')):
        ckpt = init.get('checkpoint')
        if not ckpt or '://' in str(ckpt) or osp.isfile(ckpt):
            continue
        raise ToolError(
            f'{where} wants the pretrained checkpoint {ckpt!r}, which does not exist '
            f'(relative to {os.getcwd()}).\n'
            f'  Download the official ImageNet weights (release assets at {RELEASES_URL}) into '
            f'{osp.dirname(ckpt) or "."}/,\n'
            f'  or point at your copy: --cfg-options {where}.checkpoint=/path/to/file.pth\n'
            f'  or train from scratch: --cfg-options {where}=None')


# ----------------------------------------------------------------------------------- test-time options
def apply_show(cfg, show=False, show_dir=None, wait_time=2.0):
    """Turn on the visualisation hook the way each codebase's ``tools/test.py`` does."""
    hooks = cfg.get('default_hooks') or {}
    if 'visualization' not in hooks:
        raise ToolError('--show/--show-dir need a visualization hook in default_hooks, e.g. '
                        "default_hooks = dict(visualization=dict(type='...VisualizationHook'))")
    hook = hooks['visualization']
    scope = cfg.get('default_scope')
    if scope == 'mmpretrain':
        hook.update(enable=True, show=show, wait_time=wait_time)
        if show_dir:
            hook.out_dir = show_dir
        return
    hook.draw = True
    if show:
        hook.update(show=True, wait_time=wait_time)
    if show_dir:
        if scope == 'mmseg':
            cfg.visualizer.save_dir = show_dir
        else:
            hook.test_out_dir = show_dir


def _flip_tta_pipeline(test_pipeline, scope):
    """The test pipeline with its final packing step replaced by a flip / no-flip TestTimeAug."""
    pipeline = deepcopy(list(test_pipeline))
    pack = deepcopy(pipeline[-1])
    if scope == 'mmdet':  # DetTTAModel needs the flip state to undo the flip on the boxes
        keys = tuple(pack.get('meta_keys', ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')))
        pack['meta_keys'] = keys + tuple(k for k in ('flip', 'flip_direction') if k not in keys)
    pipeline[-1] = dict(type='TestTimeAug',
                        transforms=[[dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)], [pack]])
    return pipeline


_DEFAULT_TTA_MODEL = {
    'mmdet': dict(type='DetTTAModel', tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100)),
    'mmpretrain': dict(type='mmpretrain.AverageClsScoreTTA'),
}


def apply_tta(cfg):
    """Wrap the model in the config's ``tta_model`` and test with its ``tta_pipeline``.

    Configs without them get the codebase's default: flip TTA for detection and classification. A
    segmentation config must define its own (mmseg's multi-scale TTA has no sensible default).
    """
    scope = cfg.get('default_scope')
    if 'tta_model' not in cfg:
        if scope not in _DEFAULT_TTA_MODEL:
            raise ToolError(f'--tta: the config defines no tta_model and scope {scope!r} has no default one.')
        cfg.tta_model = deepcopy(_DEFAULT_TTA_MODEL[scope])
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:
        dataset = dataset['dataset']
    if 'tta_pipeline' not in cfg:
        if scope == 'mmseg':
            raise ToolError('--tta: the config defines no tta_pipeline.')
        cfg.tta_pipeline = _flip_tta_pipeline(dataset.pipeline, scope)
    tta_model = deepcopy(cfg.tta_model)
    tta_model['module'] = cfg.model
    cfg.model = tta_model
    dataset.pipeline = cfg.tta_pipeline


def apply_out(cfg, out):
    """``--out``, part 1 (before the runner exists): check the name; mmseg keeps its maps in directory ``out``."""
    if cfg.get('default_scope') == 'mmseg':
        cfg.test_evaluator['output_dir'] = out
        cfg.test_evaluator['keep_results'] = True
    elif not out.endswith(('.pkl', '.pickle')):
        raise ToolError(f'--out must name a .pkl file, got {out!r}.')


def add_dump_results(runner, cfg, out):
    """``--out``, part 2: append a metric that dumps the predictions to ``out`` (not for mmseg)."""
    scope = cfg.get('default_scope')
    if scope == 'mmseg':
        return
    if scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults as Dump  # stores masks as RLE, like mmdet's tool
    else:
        from mmengine.evaluator import DumpResults as Dump
    runner.test_evaluator.metrics.append(Dump(out_file_path=out))


# ----------------------------------------------------------------------------------- runner
def build_runner(cfg):
    """``Runner.from_cfg``, or the config's ``runner_type`` from the registry."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)
