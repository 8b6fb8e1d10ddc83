"""VMamba: the VSS block, the ImageNet classifier :class:`VSSM` and the OpenMMLab backbone :class:`VMamba`.

Network::

    image (B, 3, H, W)
      -> stem (stride 4)                                   (B, H/4, W/4, C)
      -> 4 stages; stage i = depths[i] x VSSBlock(C * 2**i), then 2x downsampling (stages 0-2)
      -> classifier: LayerNorm -> global average pool -> Linear          (VSSM)
      or, before each downsampling, output norm i -> NCHW map at stride 4 * 2**i   (VMamba backbone)

VSSBlock (pre-norm residual)::

    x = x + DropPath(SS2D(LayerNorm(x)))
    x = x + DropPath(MLP(LayerNorm(x)))        # final design only (mlp_ratio 4)

Every variant is a row of :data:`vmamba.models.variants.ARCH_SETTINGS`.
"""
import warnings

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from mmengine.registry import MODELS

from .checkpoint import load_pretrained
from .layers import DropPath, Mlp, make_downsample, make_stem
from .ss2d import SS2D
from .variants import resolve_arch

__all__ = ['VSSBlock', 'VSSStage', 'VSSM', 'VMamba']


class VSSBlock(nn.Module):
    """One visual state-space block on a channels-last map (B, H, W, C)."""

    def __init__(self, dim, d_state, ssm_ratio, mlp_ratio, gated, conv_bias, drop_path=0.0, with_cp=False):
        super().__init__()
        self.with_cp = with_cp
        self.norm = nn.LayerNorm(dim)
        self.op = SS2D(dim, d_state=d_state, ssm_ratio=ssm_ratio, gated=gated, conv_bias=conv_bias)
        self.drop_path = DropPath(drop_path)
        if mlp_ratio > 0:
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = Mlp(dim, int(dim * mlp_ratio))
        else:
            self.mlp = None

    def _forward(self, x):
        x = x + self.drop_path(self.op(self.norm(x)))
        if self.mlp is not None:
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x

    def forward(self, x):
        if self.with_cp and x.requires_grad:
            # Recompute the block in the backward pass instead of storing its activations.
            return cp.checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)


class VSSStage(nn.Module):
    """``blocks`` at one resolution, then ``downsample`` (an Identity after the last stage)."""

    def __init__(self, blocks, downsample):
        super().__init__()
        self.blocks = blocks
        self.downsample = downsample

    def forward(self, x):
        return self.downsample(self.blocks(x))


def _build_trunk(module, settings, in_channels, drop_path_rate, with_cp):
    """Attach ``patch_embed`` and ``layers`` (the four stages) to ``module``; return the stage widths."""
    dims = [settings['dims'] * 2 ** i for i in range(4)]
    depths = settings['depths']
    # Stochastic depth grows linearly from 0 to drop_path_rate over all blocks.
    rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
    module.patch_embed = make_stem(settings['stem'], in_channels, dims[0])
    stages = []
    for i, depth in enumerate(depths):
        start = sum(depths[:i])
        blocks = nn.Sequential(*[
            VSSBlock(dims[i], settings['d_state'], settings['ssm_ratio'], settings['mlp_ratio'],
                     settings['gated'], settings['conv_bias'], drop_path=rates[start + j], with_cp=with_cp)
            for j in range(depth)])
        downsample = make_downsample(settings['downsample'], dims[i], dims[i + 1]) if i < 3 else nn.Identity()
        stages.append(VSSStage(blocks, downsample))
    module.layers = nn.ModuleList(stages)
    return dims


def _init_weights(m):
    """The official initialisation of Linear and LayerNorm modules (the SSM parameters keep their own)."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _check_input(x, in_channels, dtype=None):
    if x.dim() != 4:
        raise ValueError(f'VMamba expects a 4-D image batch (B, {in_channels}, H, W), got shape '
                         f'{tuple(x.shape)}. Add a batch dimension with x.unsqueeze(0) for a single image.')
    if x.shape[1] != in_channels:
        raise ValueError(f'VMamba was built for {in_channels} input channels, got {x.shape[1]} '
                         f'(input shape {tuple(x.shape)}; images must be NCHW).')
    if not x.is_floating_point() or (dtype is not None and x.dtype != dtype and not _autocast_on(x)):
        want = dtype if dtype is not None else 'a floating point dtype'
        raise TypeError(f'VMamba expects a float image tensor of dtype {want} (the model\'s weights), got '
                        f'{x.dtype}. Convert it first, e.g. x.float() (scale uint8 images, or use the '
                        'data preprocessor of the config), or cast the model with model.to(dtype).')


def _autocast_on(x):
    """Under autocast the ops cast their inputs themselves, so any floating dtype is fine."""
    try:
        return torch.is_autocast_enabled(x.device.type)
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_enabled()


def _weight_dtype(module):
    """The dtype of the model's first floating-point parameter (None when it has none)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), None)


class ClassifierHead(nn.Module):
    """LayerNorm -> global average pool -> Linear (keys ``classifier.norm``, ``classifier.head``)."""

    def __init__(self, dim, num_classes):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x):
        return self.head(self.norm(x).mean(dim=(1, 2)))


class VSSM(nn.Module):
    """The VMamba ImageNet classifier, parameter-for-parameter the official model.

    Args:
        arch: a variant name (``'tiny'``, ``'small_s1l20'``, ``'vanilla_base'``, ...; see
            :func:`vmamba.models.variants.arch_names`) or a custom settings dict.
        num_classes: size of the linear head (0: return pooled features).
        in_channels: image channels.
        drop_path_rate: stochastic depth at the last block; default: the variant's official value.
        with_cp: gradient checkpointing per block (less memory, ~30% more compute).

    Its ``state_dict`` has the official keys, so an official ``.pth`` loads with
    :func:`vmamba.models.checkpoint.load_official_weights` (or ``load_state_dict(strict=True)``).
    """

    def __init__(self, arch='tiny', num_classes=1000, in_channels=3, drop_path_rate=None, with_cp=False):
        super().__init__()
        self.arch_name, self.arch_settings = resolve_arch(arch)
        self.in_channels = in_channels
        if drop_path_rate is None:
            drop_path_rate = self.arch_settings['drop_path_rate']
        self.num_features = _build_trunk(self, self.arch_settings, in_channels, drop_path_rate, with_cp)
        self.classifier = ClassifierHead(self.num_features[-1], num_classes)
        self.apply(_init_weights)

    def forward_features(self, x):
        """(B, 3, H, W) -> last-stage channels-last map (B, H/32, W/32, 8C)."""
        _check_input(x, self.in_channels, _weight_dtype(self))
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return x

    def forward(self, x):
        return self.classifier(self.forward_features(x))


@MODELS.register_module()
class VMamba(BaseModule):
    """VMamba backbone for OpenMMLab detectors, segmentors and classifiers.

    Registered in mmengine's root ``MODELS`` registry, so ``dict(type='VMamba', ...)`` builds under the
    mmdet, mmseg and mmpretrain scopes alike (import ``vmamba.models``, e.g. through ``custom_imports``).

    Args:
        arch: variant name or custom settings dict (see :class:`VSSM`).
        in_channels: image channels.
        out_indices: stages whose outputs are returned; stage i is taken before its downsampling,
            with C * 2**i channels at stride 4 * 2**i, through its own LayerNorm ``outnorm{i}``.
        drop_path_rate: stochastic depth at the last block; default: the variant's official value.
        frozen_stages: as Swin: >= 0 freezes the stem; k >= 1 also freezes stages 0..k-1 and their output
            norms (eval mode, no gradients). -1 freezes nothing.
        with_cp: gradient checkpointing per block.
        pretrained: deprecated, use ``init_cfg=dict(type='Pretrained', checkpoint=...)``.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH)`` loads an official ImageNet checkpoint (its
            ``model`` entry, or ``key='model_ema'``; ``prefix='backbone.'`` for a detector/segmentor
            checkpoint). The classifier is dropped, output norms absent from the file stay freshly
            initialised, and anything else that doesn't fit raises.
    """

    def __init__(self, arch='tiny', in_channels=3, out_indices=(0, 1, 2, 3), drop_path_rate=None,
                 frozen_stages=-1, with_cp=False, pretrained=None, init_cfg=None):
        if pretrained is not None:
            if init_cfg is not None:
                raise ValueError('Pass either `pretrained` or `init_cfg`, not both.')
            if not isinstance(pretrained, str):
                raise TypeError(f'pretrained must be a checkpoint path, got {type(pretrained).__name__}')
            warnings.warn('`pretrained` is deprecated, use init_cfg=dict(type="Pretrained", checkpoint=...)')
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        super().__init__(init_cfg=init_cfg)
        self.arch_name, self.arch_settings = resolve_arch(arch)
        self.in_channels = in_channels
        self.out_indices = tuple(out_indices)
        if not self.out_indices or any(i not in range(4) for i in self.out_indices):
            raise ValueError(f'out_indices must be a non-empty subset of (0, 1, 2, 3), got {out_indices}')
        if frozen_stages not in range(-1, 5):
            raise ValueError(f'frozen_stages must be in -1..4, got {frozen_stages}')
        self.frozen_stages = frozen_stages
        if drop_path_rate is None:
            drop_path_rate = self.arch_settings['drop_path_rate']
        self.num_features = _build_trunk(self, self.arch_settings, in_channels, drop_path_rate, with_cp)
        for i in self.out_indices:
            self.add_module(f'outnorm{i}', nn.LayerNorm(self.num_features[i]))
        self.apply(_init_weights)
        self._freeze_stages()

    def init_weights(self):
        if isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained':
            unknown = set(self.init_cfg) - {'type', 'checkpoint', 'key', 'prefix', 'map_location'}
            if unknown or 'checkpoint' not in self.init_cfg:
                raise KeyError(f'VMamba init_cfg Pretrained takes checkpoint (required), key, prefix; got '
                               f'{sorted(self.init_cfg)}')
            load_pretrained(self, self.init_cfg['checkpoint'], key=self.init_cfg.get('key'),
                            prefix=self.init_cfg.get('prefix'))
            self._is_init = True
        else:
            super().init_weights()

    def _freeze_stages(self):
        if self.frozen_stages >= 0:
            self.patch_embed.eval()
            for p in self.patch_embed.parameters():
                p.requires_grad = False
        for i in range(self.frozen_stages):
            modules = [self.layers[i]] + ([getattr(self, f'outnorm{i}')] if i in self.out_indices else [])
            for m in modules:
                m.eval()
                for p in m.parameters():
                    p.requires_grad = False

    def train(self, mode=True):
        super().train(mode)
        self._freeze_stages()
        return self

    def forward(self, x):
        _check_input(x, self.in_channels, _weight_dtype(self))
        x = self.patch_embed(x)
        outs = []
        for i, layer in enumerate(self.layers):
            x = layer.blocks(x)
            if i in self.out_indices:
                out = getattr(self, f'outnorm{i}')(x)
                outs.append(out.permute(0, 3, 1, 2).contiguous())
            x = layer.downsample(x)
        return tuple(outs)
