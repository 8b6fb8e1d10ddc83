"""Stop a run whose inputs are missing before anything is built, with one message that says what to do.

:func:`check_data` names the data a config reads that is not on disk (the topmost missing folder), the
whole layout the config expects with the dataloaders that read each path, how to point the config
elsewhere, where the public set comes from and the demo config(s) that need no download.
:func:`check_pretrained` does the same for a ``Pretrained`` init_cfg naming a local file that is not there
(without it the run would build everything, then stop deep inside ``init_weights``). Dataset classes that
write their own data on first use (``GENERATES_DATA = True``, the demo sets) are not checked.
"""
import glob
import os
import os.path as osp

from vmamba.errors import ToolError
from vmamba.models.variants import RELEASES_URL

from .config_transforms import LOADERS

__all__ = ['DATA_SOURCES', 'loader_datasets', 'check_data', 'check_pretrained']

#: Where the public datasets come from, by dataset type, for the missing-data message.
DATA_SOURCES = {
    'CocoDataset': 'COCO 2017 (train2017.zip, val2017.zip, annotations_trainval2017.zip) from '
                   'https://cocodataset.org/#download',
    'ADE20KDataset': 'ADEChallengeData2016.zip (ADE20K scene parsing) from http://sceneparsing.csail.mit.edu/',
    'ImageNet': 'ImageNet-1k (ILSVRC2012) from https://image-net.org/download.php',
}



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


def loader_datasets(cfg, loaders):
    """``(loader key, leaf dataset config)`` for every dataset the config's ``loaders`` read, in config order."""
    for key in loaders:
        loader = cfg.get(key)
        if loader and 'dataset' in loader:
            for dataset in _innermost_datasets(loader['dataset']):
                yield key, dataset


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


def check_data(cfg, config_path, loaders=LOADERS):
    """Fail early, with one message, if the data a config names is not on disk.

    The message names what is missing (the topmost missing folder, not everything under it), the whole
    layout the config expects with the dataloaders that read each path, how to point the config elsewhere,
    and the demo config(s) next to ``config_path`` as the alternative.
    """
    scope = cfg.get('default_scope')
    users = {}  # path -> dataloaders that read it, in config order
    kinds = []
    for key, dataset in loader_datasets(cfg, loaders):
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
