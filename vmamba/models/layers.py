"""Small building blocks of VMamba: stems, downsampling, MLP, drop-path.

Layout convention: inside the network, feature maps are channels-last, (B, H, W, C), so that every
LayerNorm and Linear acts on the last dimension. Convolutions need (B, C, H, W); the ``ToChannels*``
modules switch between the two. The official "LayerNorm2d over channels-first maps" of the final design
is the same function as a LayerNorm over the channels of a channels-last map, with the same weights.

Module indices inside the ``nn.Sequential`` stems and downsamplers match the official checkpoints
(``patch_embed.0/2/5/7``, ``downsample.1/3``), which is why the layout switches are modules.

Every convolution is built by :func:`channels_last_conv2d`: its input is a channels-last map seen as (B, C, H, W)
(a view, no copy), and with the weight stored the same way the CPU and GPU kernels neither reorder the weight on
every call nor copy the output, and the stem's first conv writes a channels-last map for the LayerNorm after it.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['DropPath', 'Mlp', 'ToChannelsFirst', 'ToChannelsLast', 'PatchMerging', 'channels_last_conv2d',
           'make_stem', 'make_downsample']


def channels_last_conv2d(*args, **kwargs):
    """``nn.Conv2d(*args, **kwargs)`` with its weight in the channels_last memory format.

    The same parameter (name, shape, values; loading a checkpoint copies into it and keeps the format), only its
    strides differ. Why: a contiguous weight on a channels-last input is reordered by oneDNN on every call (and
    back for its gradient); stored channels_last it is not (timings: docs/benchmarks.md, "Model-code choices").
    """
    return nn.Conv2d(*args, **kwargs).to(memory_format=torch.channels_last)


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
    """fc1 -> GELU -> fc2, on channels-last maps.

    Single-threaded CPU inference on a large input (more than :attr:`blocked_above` hidden values, 8 MB in fp32)
    runs it in blocks of positions (:attr:`block_elems` hidden values, 1 MB), so that the 4x wider hidden
    activations stay in cache instead of going to memory and back, and are never allocated for the whole map.
    Each position goes through the same products and GELU as in one piece (equal up to fp32 round-off; bitwise in
    the tests). With more threads the blocks' many short parallel regions stall whenever another process holds a
    core, so training, multi-threaded inference, GPUs and traced/compiled graphs take the one-piece path (timings:
    docs/benchmarks.md, "Model-code choices").
    """

    #: Hidden activations per block in blocked CPU inference (the best of 2^17..2^20 on a CPU with 512 KB L2).
    block_elems = 2 ** 18
    #: Inputs whose hidden activations are smaller than this stay in one piece (they fit the last-level cache).
    blocked_above = 2 ** 21

    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x):
        if not _blocked_inference(x):  # first: no size test or thread query inside a traced/compiled graph
            return self.fc2(self.act(self.fc1(x)))
        hidden = self.fc1.out_features
        if x.shape[:-1].numel() * hidden <= self.blocked_above:
            return self.fc2(self.act(self.fc1(x)))
        rows = max(1, self.block_elems // hidden)
        flat, out = x.reshape(-1, x.shape[-1]), None
        for i in range(0, flat.shape[0], rows):
            y = self.fc2(self.act(self.fc1(flat[i:i + rows])))
            if out is None:
                out = y.new_empty(flat.shape[0], y.shape[-1])
            out[i:i + rows] = y
        return out.view(*x.shape[:-1], -1)


def _blocked_inference(x):
    """Whether an op may loop over blocks of ``x``: eager single-threaded CPU inference (no autograd graph, no jit
    trace, no torch.compile / torch.export, where a Python loop would be unrolled into the graph)."""
    return (x.device.type == 'cpu' and not torch.is_grad_enabled() and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling() and torch.get_num_threads() == 1)


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
        return _PadToMultiple(4, channels_last_conv2d(in_channels, dim, kernel_size=4, stride=4), ToChannelsLast(),
                              nn.LayerNorm(dim))
    if kind == 'conv':
        return nn.Sequential(
            channels_last_conv2d(in_channels, dim // 2, kernel_size=3, stride=2, padding=1), ToChannelsLast(),
            nn.LayerNorm(dim // 2), ToChannelsFirst(), nn.GELU(),
            channels_last_conv2d(dim // 2, dim, kernel_size=3, stride=2, padding=1), ToChannelsLast(),
            nn.LayerNorm(dim))
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
        return nn.Sequential(ToChannelsFirst(),
                             channels_last_conv2d(dim, out_dim, kernel_size=3, stride=2, padding=1),
                             ToChannelsLast(), nn.LayerNorm(out_dim))
    raise ValueError(f'unknown downsample {kind!r} (expected "merge" or "conv")')
