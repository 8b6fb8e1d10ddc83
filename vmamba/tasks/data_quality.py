"""The samples a config trains and validates on, checked before training: each problem with its file.

A broken sample otherwise shows up hours into a run (a missing image in the validation set at the first
evaluation), or never (mmdet silently drops zero-width boxes; a label value above the class count becomes a
wrong target or a CUDA assert). :func:`check_datasets` builds each dataset of the config the way the Runner
will (without loading a sample through its pipeline) and checks, per task:

* classification (ImageNet folders or annotation files): each image exists and its header reads; its label
  is one of the classes;
* segmentation (ADE20K folders): image and label map exist and their headers read, with the same size; the
  label values (after ``reduce_zero_label`` and the class-subset ``label_map``) are classes or the ignore
  index. The values need the pixels: the label maps of up to :data:`SAMPLED` samples spread over the set
  are read, all with ``full=True``;
* detection (COCO json): each image exists, its header reads and matches the json's size; each box has a
  positive width and height and lies inside its image; each category is one the json declares.

Headers are read with PIL (no decoding), so the check reads a few hundred bytes per file. The result is
a :class:`DataReport`; :func:`enforce` stops the run with it (the default) or, with ``skip=True``, drops
the bad samples (``indices`` on the dataset, or a cleaned copy of the COCO json in the work dir).
"""
import json
import os
import os.path as osp

from vmamba.errors import ToolError

from .adapters import lookup
from .data_checks import loader_datasets

__all__ = ['SAMPLED', 'DataReport', 'BadDataError', 'check_datasets', 'enforce']

#: Label maps read per segmentation set without ``full``.
SAMPLED = 100
#: Problems listed in full in a message; the rest are counted.
SHOWN = 20


class BadDataError(ToolError):
    """A sample a dataset lists is missing or wrong."""


class DataReport:
    """Problems found in one dataset: ``[(file, what)]``, and the bad sample positions."""

    def __init__(self, where):
        self.where, self.problems, self.bad, self.total = where, [], set(), 0
        self.clean_ann = None  # detection: the json without the bad images/annotations, when skipping

    def add(self, index, path, what):
        self.problems.append((path, what))
        if index is not None:
            self.bad.add(index)


def _size(path):
    """(width, height) from the file's header, or a string saying why it cannot be read."""
    from PIL import Image
    if not osp.isfile(path):
        return 'does not exist'
    try:
        with Image.open(path) as img:
            return img.size
    except Exception as err:  # PIL's errors for a non-image or truncated header
        return f'cannot be read as an image ({type(err).__name__})'


def _build(dataset_cfg, scope):
    from mmengine.registry import DATASETS
    cfg = dict(dataset_cfg)
    cfg['lazy_init'] = True
    with DATASETS.switch_scope_and_registry(scope) as registry:
        return registry.build(cfg)


def _check_cls(dataset, report):
    dataset.full_init()
    classes = len(dataset.metainfo.get('classes') or ()) or None
    report.total = len(dataset)
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        path = info.get('img_path')
        size = _size(path)
        if isinstance(size, str):
            report.add(i, path, f'image {size}')
        label = info.get('gt_label')
        if classes is not None and label is not None and not 0 <= int(label) < classes:
            report.add(i, path, f'label {int(label)} is not a class (0..{classes - 1})')


def _seg_values(path):
    import numpy as np
    from PIL import Image
    with Image.open(path) as img:
        return {int(v) for v in np.unique(np.asarray(img))}


def _check_seg(dataset, report, full):
    dataset.full_init()
    classes = len(dataset.metainfo.get('classes') or ())
    ignore = getattr(dataset, 'ignore_index', 255)
    reduce = getattr(dataset, 'reduce_zero_label', False)
    label_map = dataset.metainfo.get('label_map') or {}
    n = report.total = len(dataset)
    sampled = set(range(n)) if full or n <= SAMPLED else {round(k * (n - 1) / (SAMPLED - 1)) for k in range(SAMPLED)}
    for i in range(n):
        info = dataset.get_data_info(i)
        img, seg = info.get('img_path'), info.get('seg_map_path')
        img_size = _size(img)
        if isinstance(img_size, str):
            report.add(i, img, f'image {img_size}')
        if seg is None:
            continue
        seg_size = _size(seg)
        if isinstance(seg_size, str):
            report.add(i, seg, f'label map {seg_size}')
            continue
        if not isinstance(img_size, str) and seg_size != img_size:
            report.add(i, seg, f'label map is {seg_size[0]}x{seg_size[1]}, its image {img} is '
                               f'{img_size[0]}x{img_size[1]}')
        if i in sampled:
            try:
                values = _seg_values(seg)
            except Exception as err:  # a truncated or corrupt file: PIL reads the header, not the pixels
                report.add(i, seg, f'label map cannot be decoded ({err})')
                continue
            bad = []
            for v in sorted(values):
                m = (255 if v == 0 else v - 1) if reduce else v
                m = 255 if reduce and m == 254 else m
                m = label_map.get(m, m)
                if not (0 <= m < classes or m == ignore):
                    bad.append(v)
            if bad:
                report.add(i, seg, f'label values {bad} are not classes (0..{classes - 1}'
                                   f'{", stored +1: reduce_zero_label" if reduce else ""}) or the ignore index '
                                   f'{ignore}')


def _check_coco(dataset, report, skip, out_dir):
    ann_file = dataset.ann_file
    img_dir = dataset.data_prefix.get('img', '') if isinstance(dataset.data_prefix, dict) else ''
    with open(ann_file) as f:
        coco = json.load(f)
    categories = {c['id'] for c in coco.get('categories', [])}
    images = {im['id']: im for im in coco.get('images', [])}
    report.total = len(images)
    bad_images, bad_anns = set(), set()
    sizes = {}
    for im in images.values():
        path = osp.join(img_dir, im['file_name'])
        size = _size(path)
        sizes[im['id']] = size if not isinstance(size, str) else None
        if isinstance(size, str):
            report.add(im['id'], path, f'image {size} (listed in {ann_file})')
            bad_images.add(im['id'])
        elif im.get('width') and (im.get('width'), im.get('height')) != size:
            report.add(im['id'], path, f'image is {size[0]}x{size[1]}, {ann_file} says {im["width"]}x{im["height"]}')
            bad_images.add(im['id'])
    for k, ann in enumerate(coco.get('annotations', [])):
        im = images.get(ann.get('image_id'))
        where = osp.join(img_dir, im['file_name']) if im else ann_file
        what = None
        if im is None:
            what = f'annotation {ann.get("id", k)} names image_id {ann.get("image_id")}, which {ann_file} lacks'
        elif ann.get('category_id') not in categories:
            what = (f'annotation {ann.get("id", k)} has category_id {ann.get("category_id")}, not one of '
                    f'{ann_file}\'s categories {sorted(categories)}')
        elif not ann.get('iscrowd'):
            x, y, w, h = ann['bbox']
            width, height = im.get('width') or (sizes.get(im['id']) or (None, None))[0], \
                im.get('height') or (sizes.get(im['id']) or (None, None))[1]
            if w <= 0 or h <= 0:
                what = f'annotation {ann.get("id", k)} has a box of width {w} and height {h}'
            elif width and (x < -1 or y < -1 or x + w > width + 1 or y + h > height + 1):
                what = f'annotation {ann.get("id", k)} box {[x, y, w, h]} is outside the {width}x{height} image'
        if what:
            report.add(None, where, what)
            bad_anns.add(k)
    if skip and (bad_images or bad_anns):
        coco = dict(coco, images=[im for i, im in images.items() if i not in bad_images],
                    annotations=[a for k, a in enumerate(coco.get('annotations', []))
                                 if k not in bad_anns and a.get('image_id') not in bad_images])
        os.makedirs(out_dir, exist_ok=True)
        report.clean_ann = osp.join(out_dir, 'clean_' + osp.basename(ann_file))
        with open(report.clean_ann, 'w') as f:
            json.dump(coco, f)
        report.bad = set(bad_images)


def check_datasets(cfg, loaders, full=False, skip=False):
    """``[(loader key, dataset config, DataReport)]`` for each leaf dataset of ``loaders``."""
    scope = cfg.get('default_scope')
    adapter = lookup(cfg)
    task = adapter.task if adapter else None
    out_dir = osp.abspath(osp.join(cfg.get('work_dir') or '.', 'clean_data'))
    found = []
    for key, dataset_cfg in loader_datasets(cfg, loaders):
        report = DataReport(key)
        try:
            dataset = _build(dataset_cfg, scope)
        except Exception as err:  # the Runner reports it with its own message
            report.add(None, dataset_cfg.get('ann_file') or dataset_cfg.get('data_root'),
                       f'the dataset cannot be built: {type(err).__name__}: {err}')
            found.append((key, dataset_cfg, report))
            continue
        if task == 'detection' and str(getattr(dataset, 'ann_file', '')).endswith('.json'):
            _check_coco(dataset, report, skip, out_dir)
        elif task == 'segmentation':
            _check_seg(dataset, report, full)
        else:
            _check_cls(dataset, report)
        found.append((key, dataset_cfg, report))
    return found


def _message(reports):
    lines = []
    for key, _, report in reports:
        for path, what in report.problems[:SHOWN]:
            lines.append(f'  {key}: {path}: {what}')
        if len(report.problems) > SHOWN:
            lines.append(f'  {key}: ... and {len(report.problems) - SHOWN} more')
    return lines


def enforce(reports, skip=False, log=print):
    """Stop with every problem listed, or (``skip``) drop the bad samples from the dataset configs."""
    bad = [r for r in reports if r[2].problems]
    if not bad:
        return
    count = sum(len(r.problems) for _, _, r in bad)
    if not skip:
        what = 'Fix or remove those samples, or pass --skip-bad-data to train without them.'
        if count == 1:  # one line
            raise BadDataError(f'Bad data, found before training: {_message(bad)[0].strip()}. {what}')
        raise BadDataError(f'{count} problem(s) in the data, found before training:\n' + '\n'.join(_message(bad))
                           + f'\n{what}')
    for key, dataset_cfg, report in bad:
        if report.clean_ann:
            dataset_cfg['ann_file'] = report.clean_ann
        elif report.bad:
            kept = [i for i in range(report.total) if i not in report.bad]
            if not kept:
                raise BadDataError(f'--skip-bad-data: every sample of {key} is bad:\n' + '\n'.join(_message(bad)))
            dataset_cfg['indices'] = kept
    log(f'--skip-bad-data: training without {count} bad sample(s) or annotation(s):\n' + '\n'.join(_message(bad)))
