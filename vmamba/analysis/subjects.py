"""The models the analysis tools measure ("subjects"), built from one spec string, and their synthetic batches.

A spec is one of

* a VMamba variant name or alias (``tiny``, ``vanilla_base``, ... see :func:`vmamba.models.arch_names`):
  the official ImageNet classifier :class:`~vmamba.models.VSSM`;
* a baseline name from :data:`BASELINES` (``swin_t``, ``resnet50``, ``swin_t_maskrcnn``, ...): the upstream
  OpenMMLab config, so the baseline is exactly the model mmpretrain/mmdet/mmseg ship;
* a config file (``configs/detection/maskrcnn_vmamba_tiny_1x.py``) or an upstream ``pkg::path`` config.
  Its ``default_scope`` (mmpretrain / mmdet / mmseg) decides the task.

Whatever the kind, a :class:`Subject` offers the same four calls on a synthetic :class:`Batch`:
``forward_tensor`` (the inference graph OpenMMLab's FLOP counters trace), ``predict`` (full inference,
post-processing included), ``loss`` (the training objective on synthetic targets) and ``features`` (the
last backbone feature map, for receptive-field maps). Inputs are random normalised images, so no dataset
is needed; FLOPs and timings do not depend on pixel values (the proposal count of a detector is capped by
its test config, as in mmdet's own counter).

Weights are freshly initialised (a config's ``Pretrained`` init is not run) unless a checkpoint is given.
"""
import importlib
import importlib.util
import os.path as osp
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from vmamba.models import VSSM, arch_names, load_official_weights, resolve_arch
from vmamba.tasks.adapters import SUPPORTED_SCOPES, lookup

from .flops import Complexity, count_complexity

__all__ = ['TASKS', 'DEFAULT_SHAPES', 'BASELINES', 'TIMM_BASELINES', 'SWIN_BASELINE', 'Batch', 'Subject',
           'build_subject', 'SpecError']

TASKS = ('classification', 'detection', 'segmentation')

#: The input size at which each task's FLOPs are published (H, W): ImageNet 224, COCO 1280x800 (as the
#: official count: ``input_shape=(3, 1280, 800)``), ADE20K whole-image inference 512x2048.
DEFAULT_SHAPES = {'classification': (224, 224), 'detection': (1280, 800), 'segmentation': (512, 2048)}

#: Baselines by name -> the upstream config that defines them.
BASELINES = {
    'swin_t': 'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py',
    'resnet50': 'mmpretrain::resnet/resnet50_8xb32_in1k.py',
    'swin_t_maskrcnn': 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py',
    'resnet50_maskrcnn': 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
    'swin_t_upernet': 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',
    'resnet50_upernet': 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py',
}

#: Overrides applied to a baseline's config. mmpretrain's Swin refuses feature maps smaller than its 7x7
#: window unless it may pad them; that only happens below 224 px, where the tests run tiny inputs.
BASELINE_OPTIONS = {'swin_t': {'model.backbone.pad_small_map': True}}

#: The Swin-T model VMamba is compared with, per task.
SWIN_BASELINE = {'classification': 'swin_t', 'detection': 'swin_t_maskrcnn', 'segmentation': 'swin_t_upernet'}


class SpecError(ValueError):
    """A model spec that names no variant, baseline or config; the message lists what is accepted."""


@dataclass
class Batch:
    """Synthetic inputs: ``images`` (B, 3, H, W) and the task's targets/meta (``None`` for inference of a
    classifier; class labels for a classifier's loss; OpenMMLab data samples for detectors/segmentors)."""
    images: torch.Tensor
    samples: Any = None
    has_targets: bool = False


class Subject:
    """A model under analysis. Subclasses say how to run each kind; see the module docstring."""

    task = 'classification'

    def __init__(self, name, model, arch=None):
        self.name = name
        self.model = model
        self.arch = arch  # canonical VMamba variant name, if the model is (or has) a VMamba backbone

    # -- set-up
    @property
    def device(self):
        return next(self.model.parameters()).device

    def to(self, device):
        self.model.to(device)
        return self

    def fit_shape(self, height, width):
        """The input size the model is run at for a requested size (detectors pad to their divisor)."""
        return int(height), int(width)

    def batch(self, batch_size, height, width, targets=False, seed=0):
        """Random normalised images of the fitted size; with ``targets`` also synthetic training targets."""
        height, width = self.fit_shape(height, width)
        gen = torch.Generator().manual_seed(seed)
        images = torch.randn(batch_size, 3, height, width, generator=gen).to(self.device)
        return Batch(images, self._samples(batch_size, height, width, targets, gen), has_targets=targets)

    def _samples(self, batch_size, height, width, targets, gen):
        if not targets:
            return None
        return torch.randint(0, self.num_classes, (batch_size,), generator=gen).to(self.device)

    # -- the four calls
    def forward_tensor(self, batch):
        """The raw inference outputs (what FLOP counters trace)."""
        raise NotImplementedError

    def predict(self, batch):
        """Full inference, post-processing included."""
        return self.forward_tensor(batch)

    def loss(self, batch):
        """Scalar training loss; ``batch`` must come from ``batch(..., targets=True)``."""
        _require_targets(batch)
        return F.cross_entropy(self.forward_tensor(batch), batch.samples)

    def features(self, images):
        """The last backbone feature map, (B, C, h, w)."""
        return self.model.backbone(images)[-1]

    # -- complexity
    def flops(self, height=None, width=None, batch_size=1) -> Complexity:
        """Parameters (of the whole model) and FLOPs of ``forward_tensor`` at (height, width)."""
        if height is None:
            height, width = DEFAULT_SHAPES[self.task]
        batch = self.batch(batch_size, height, width)
        result = count_complexity(_TensorForward(self, batch), batch.images, params_of=self.model)
        # Report module names relative to the model, not to the tracing wrapper.
        result.by_module = {k[len('model.'):] if k.startswith('model.') else k: v
                            for k, v in result.by_module.items() if k != 'model'}
        return result

    def __repr__(self):
        return f'{type(self).__name__}({self.name!r}, task={self.task!r})'


def _require_targets(batch):
    if not batch.has_targets:
        raise ValueError('A training loss needs targets: make the batch with subject.batch(..., targets=True).')


class _TensorForward(nn.Module):
    """Presents ``subject.forward_tensor`` on a fixed batch as a module ``forward(images)`` for jit tracing."""

    def __init__(self, subject, batch):
        super().__init__()
        self.model = subject.model
        self._subject = subject
        self._batch = batch

    def forward(self, images):
        return self._subject.forward_tensor(Batch(images, self._batch.samples))


class VSSMSubject(Subject):
    """The official VMamba ImageNet classifier, built from a variant name."""

    def __init__(self, arch, checkpoint=None, checkpoint_key=None):
        model = VSSM(arch=arch)  # a variant name, or a custom settings dict (named 'custom')
        if checkpoint:
            load_official_weights(model, checkpoint, key=checkpoint_key)
        super().__init__(arch if isinstance(arch, str) else model.arch_name, model, arch=model.arch_name)
        self.num_classes = model.classifier.head.out_features

    def forward_tensor(self, batch):
        return self.model(batch.images)

    def features(self, images):
        return self.model.forward_features(images).permute(0, 3, 1, 2)


class TimmSubject(Subject):
    """A timm ImageNet classifier: the Swin-T baseline where mmpretrain is absent (a bare GPU machine). timm's
    ``swin_tiny_patch4_window7_224`` is the same architecture as mmpretrain's Swin-T (28.3 M parameters)."""

    def __init__(self, name, timm_name, input_size=224):
        import timm
        # Swin's window attention needs the input size at build time; smaller inputs (tests) also shrink the window.
        kwargs = {} if input_size == 224 else dict(img_size=input_size, window_size=max(1, min(7, input_size // 32)))
        super().__init__(name, timm.create_model(timm_name, pretrained=False, **kwargs))
        self.num_classes = self.model.num_classes
        self.input_size = input_size

    def fit_shape(self, height, width):
        return self.input_size, self.input_size

    def forward_tensor(self, batch):
        return self.model(batch.images)

    def features(self, images):
        return self.model.forward_features(images).permute(0, 3, 1, 2)


#: Baselines that timm also provides, used where the OpenMMLab task package is not installed.
TIMM_BASELINES = {'swin_t': ('mmpretrain', 'swin_tiny_patch4_window7_224')}


def _installed(package):
    try:
        return importlib.util.find_spec(package) is not None
    except ImportError:  # a finder that refuses the name
        return False


def _timm_baseline(spec, input_size):
    """The timm twin of baseline ``spec`` when its OpenMMLab package cannot be imported, else None; SpecError
    when neither can be."""
    package, timm_name = TIMM_BASELINES.get(spec, (None, None))
    if package is None or _installed(package):
        return None
    if not _installed('timm'):
        raise SpecError(f'{spec}: neither {package} nor timm is installed, so this baseline cannot be built')
    return TimmSubject(f'{spec} (timm)', timm_name, input_size)


class ClassifierSubject(Subject):
    """An mmpretrain ``ImageClassifier`` (a project classification config, Swin-T, ResNet-50, ...).

    The loss is plain cross-entropy on the logits, as for :class:`VSSMSubject`, so that training
    throughput compares backbones, not losses (the data preprocessor's Mixup/CutMix is not run).
    """

    def __init__(self, name, model, arch=None):
        super().__init__(name, model, arch)
        self.num_classes = model.head.num_classes

    def forward_tensor(self, batch):
        return self.model(batch.images, mode='tensor')


class DetectorSubject(Subject):
    """An mmdet detector. Inputs are padded to the data preprocessor's divisor, as mmdet does."""

    task = 'detection'

    def __init__(self, name, model, arch=None, size_divisor=32):
        super().__init__(name, model, arch)
        self.size_divisor = size_divisor
        head = getattr(model, 'roi_head', None)
        head = getattr(head, 'bbox_head', None) or getattr(model, 'bbox_head', None)
        self.num_classes = getattr(head, 'num_classes', 80)

    def fit_shape(self, height, width):
        d = self.size_divisor
        return -(-int(height) // d) * d, -(-int(width) // d) * d

    def _samples(self, batch_size, height, width, targets, gen):
        from mmdet.structures import DetDataSample
        from mmdet.structures.mask import BitmapMasks
        from mmengine.structures import InstanceData

        meta = dict(img_shape=(height, width), ori_shape=(height, width), pad_shape=(height, width),
                    batch_input_shape=(height, width), scale_factor=(1.0, 1.0))
        samples = []
        for _ in range(batch_size):
            sample = DetDataSample(metainfo=meta)
            if targets:  # four random boxes per image, with box-shaped masks
                n = 4
                corner = torch.rand(n, 2, generator=gen) * torch.tensor([width, height]) * 0.6
                extent = (0.1 + 0.3 * torch.rand(n, 2, generator=gen)) * torch.tensor([width, height])
                boxes = torch.cat([corner, corner + extent], dim=1).floor()
                masks = np.zeros((n, height, width), dtype=np.uint8)
                for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
                    masks[i, y0:y1, x0:x1] = 1
                sample.gt_instances = InstanceData(
                    bboxes=boxes.to(self.device),
                    labels=torch.randint(0, self.num_classes, (n,), generator=gen).to(self.device),
                    masks=BitmapMasks(masks, height, width))
            samples.append(sample)
        return samples

    def forward_tensor(self, batch):
        return self.model(batch.images, batch.samples, mode='tensor')

    def predict(self, batch):
        return self.model(batch.images, batch.samples, mode='predict')

    def loss(self, batch):
        _require_targets(batch)
        return self.model.parse_losses(self.model(batch.images, batch.samples, mode='loss'))[0]


class SegmentorSubject(Subject):
    """An mmseg segmentor. Its parameters include the auxiliary head (as published); its FLOPs are those of
    the inference graph (backbone + decode head), as mmseg's and the official counters trace it."""

    task = 'segmentation'

    def __init__(self, name, model, arch=None):
        super().__init__(name, model, arch)
        self.num_classes = model.decode_head.num_classes

    def _samples(self, batch_size, height, width, targets, gen):
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample

        meta = dict(img_shape=(height, width), ori_shape=(height, width), pad_shape=(height, width))
        samples = []
        for _ in range(batch_size):
            sample = SegDataSample(metainfo=meta)
            if targets:
                labels = torch.randint(0, self.num_classes, (1, height, width), generator=gen)
                sample.gt_sem_seg = PixelData(data=labels.to(self.device))
            samples.append(sample)
        return samples

    def forward_tensor(self, batch):
        return self.model(batch.images, batch.samples, mode='tensor')

    def predict(self, batch):
        return self.model(batch.images, batch.samples, mode='predict')

    def loss(self, batch):
        _require_targets(batch)
        return self.model.parse_losses(self.model(batch.images, batch.samples, mode='loss'))[0]


_SUBJECT_CLASS = {'classification': ClassifierSubject, 'detection': DetectorSubject,
                  'segmentation': SegmentorSubject}


def _load_config(spec, cfg_options=None):
    from mmengine.config import Config
    if '::' in spec:
        from mmengine.hub import get_config
        cfg = get_config(spec)
    else:
        if not osp.isfile(spec):
            raise SpecError(f'Config file not found: {spec!r}.')
        cfg = Config.fromfile(spec)  # also imports the config's custom_imports (e.g. vmamba.models)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def _config_subject(name, spec, checkpoint=None, cfg_options=None):
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope

    cfg = _load_config(spec, cfg_options)
    adapter = lookup(cfg)
    if adapter is None:
        raise SpecError(f'{spec}: default_scope {cfg.get("default_scope")!r} is not one of '
                        f'{sorted(SUPPORTED_SCOPES)}; the analysis tools handle mmpretrain classifiers, mmdet '
                        'detectors and mmseg segmentors.')
    task = adapter.task
    init_default_scope(adapter.scope)
    registry = importlib.import_module(adapter.registry).MODELS
    model = revert_sync_batchnorm(registry.build(cfg.model))  # SyncBN needs a process group
    if checkpoint:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    backbone = cfg.model.get('backbone', {})
    arch = resolve_arch(backbone['arch'])[0] if backbone.get('type') == 'VMamba' else None
    kwargs = {}
    if task == 'detection':
        kwargs['size_divisor'] = cfg.model.get('data_preprocessor', {}).get('pad_size_divisor', 32)
    return _SUBJECT_CLASS[task](name, model, arch=arch, **kwargs)


def build_subject(spec, checkpoint=None, checkpoint_key=None, cfg_options=None, device='cpu',
                  input_size=224) -> Subject:
    """Build the model named by ``spec`` (see the module docstring), optionally from a checkpoint.

    ``checkpoint_key`` picks the entry of an official VMamba file (``model`` or ``model_ema``); config
    models load mmengine/OpenMMLab checkpoints strictly. Any mismatch raises. ``input_size`` only matters for a
    timm baseline (built where mmpretrain is absent), whose window attention is fixed to it.
    """
    spec = str(spec)
    timm_subject = _timm_baseline(spec, input_size) if spec in BASELINES and not checkpoint else None
    if timm_subject is not None:
        subject = timm_subject
    elif spec in BASELINES:
        options = dict(BASELINE_OPTIONS.get(spec, {}), **(cfg_options or {}))
        subject = _config_subject(spec, BASELINES[spec], checkpoint, options)
    elif '::' in spec or spec.endswith('.py') or osp.exists(spec):
        name = spec if '::' in spec else osp.splitext(osp.basename(spec))[0]
        subject = _config_subject(name, spec, checkpoint, cfg_options)
    else:
        try:
            resolve_arch(spec)
        except KeyError:
            raise SpecError(f'Unknown model {spec!r}. Give a VMamba variant ({", ".join(arch_names())}), '
                            f'a baseline ({", ".join(BASELINES)}), a config file, or an upstream config '
                            "such as 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'.") from None
        subject = VSSMSubject(spec, checkpoint=checkpoint, checkpoint_key=checkpoint_key)
    return subject.to(device)
