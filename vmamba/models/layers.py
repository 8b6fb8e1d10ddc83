"""Small building blocks of VMamba: stems, downsampling, MLP, drop-path.

Layout convention: inside the network, feature maps are channels-last, (B, H, W, C), so that every
LayerNorm and Linear acts on the last dimension. Convolutions need (B, C, H, W); the ``ToChannels*``
modules switch between the two. The official "LayerNorm2d over channels-first maps" of the final design
is the same function as a LayerNorm over the channels of a channels-last map, with the same weights.

Module indices inside the ``nn.Sequential`` stems and downsamplers match the official checkpoints
(``patch_embed.0/2/5/7``, ``downsample.1/3``), which is why the layout switches are modules.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['DropPath', 'Mlp', 'ToChannelsFirst', 'ToChannelsLast', 'PatchMerging', 'make_stem',
           'make_downsample']


class ToChannelsLast(nn.Module):
    """(B, C, H, W) -> (B, H, W, C)."""

    def forward(self, x):
        return x.permute(0, 2, 3, 1)


class ToChannelsFirst(nn.Module):
    """(B, H, W, C) -> (B, C, H, W)."""

    def forward(self, x):
        return x.permute(0, 3, 1, 2)


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability ``p``."""

    def __init__(self, p=0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self):
        return f'p={self.p}'


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2, on channels-last maps."""

    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _PadToMultiple(nn.Sequential):
    """A Sequential that first zero-pads H and W (bottom/right) up to a multiple of ``multiple``.

    So that odd input sizes give ceil-divided maps, as Swin's patch embedding does.
    """

    def __init__(self, multiple, *modules):
        super().__init__(*modules)
        self.multiple = multiple

    def forward(self, x):
        H, W = x.shape[-2:]
        pad_h, pad_w = (-H) % self.multiple, (-W) % self.multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return super().forward(x)


def make_stem(kind, in_channels, dim):
    """Patch embedding to stride 4. Input (B, 3, H, W), output channels-last (B, H/4, W/4, dim).

    * ``'patchify'`` (vanilla): a 4x4 stride-4 conv and LayerNorm (keys ``.0``, ``.2``).
    * ``'conv'`` (final): two 3x3 stride-2 convs with LayerNorm + GELU between and LayerNorm after
      (keys ``.0``, ``.2``, ``.5``, ``.7``).
    """
    if kind == 'patchify':
        return _PadToMultiple(4, nn.Conv2d(in_channels, dim, kernel_size=4, stride=4), ToChannelsLast(),
                              nn.LayerNorm(dim))
    if kind == 'conv':
        return nn.Sequential(
            nn.Conv2d(in_channels, dim // 2, kernel_size=3, stride=2, padding=1), ToChannelsLast(),
            nn.LayerNorm(dim // 2), ToChannelsFirst(), nn.GELU(),
            nn.Conv2d(dim // 2, dim, kernel_size=3, stride=2, padding=1), ToChannelsLast(), nn.LayerNorm(dim))
    raise ValueError(f'unknown stem {kind!r} (expected "patchify" or "conv")')


class PatchMerging(nn.Module):
    """Swin-style 2x downsampling (vanilla): concat each 2x2 neighbourhood -> LayerNorm(4C) -> Linear(4C, 2C).

    Odd sizes are zero-padded to even first, giving ceil-divided maps.
    """

    def __init__(self, dim, out_dim):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x):
        H, W = x.shape[1:3]
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        # The official concatenation order: (even, even), (odd, even), (even, odd), (odd, odd) in (row, col).
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


def make_downsample(kind, dim, out_dim):
    """2x downsampling between stages, channels-last in and out.

    * ``'merge'`` (vanilla): :class:`PatchMerging` (keys ``.norm``, ``.reduction``).
    * ``'conv'`` (final): 3x3 stride-2 conv + LayerNorm (keys ``.1``, ``.3``).
    """
    if kind == 'merge':
        return PatchMerging(dim, out_dim)
    if kind == 'conv':
        return nn.Sequential(ToChannelsFirst(), nn.Conv2d(dim, out_dim, kernel_size=3, stride=2, padding=1),
                             ToChannelsLast(), nn.LayerNorm(out_dim))
    raise ValueError(f'unknown downsample {kind!r} (expected "merge" or "conv")')
