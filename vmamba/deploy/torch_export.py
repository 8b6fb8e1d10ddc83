"""``torch.export`` of a VMamba classifier or backbone, with a dynamic batch and dynamic H, W.

The scan ops are ``torch.library`` custom ops (:mod:`vmamba.ops.dispatch`), so an exported program has exactly
one ``vmamba.ss2d_scan`` node per SS2D call, whatever the backend, and the batch and the spatial sizes stay
symbolic. Which sizes one program accepts depends on the design:

- the final design (conv stem, conv downsampling: ``tiny``, ``small``, ``base``, ``*_s1l*``, ``*_s2l*``): any
  H, W >= :data:`MIN_SIDE` (below it a map of size 1 after the 32x reduction would be specialised);
- the vanilla design (4x4 patchify stem, 2x2 patch merging with zero padding of odd maps): H and W multiples
  of 32 from 64, because the symbolic-shape solver cannot prove the padded ceil-divisions equal for every size.

    ep = export_model(VSSM('tiny').eval(), torch.randn(2, 3, 224, 224))
    ep.module()(torch.randn(8, 3, 256, 320))      # another batch and size, the same program
"""
import torch
from torch.export import Dim

__all__ = ['MIN_SIDE', 'MAX_SIDE', 'STRIDE', 'export_model', 'scan_nodes']

#: Smallest input side an exported program accepts (stage 4 has at least 2 positions a side).
MIN_SIDE = 33
MAX_SIDE = 8192
#: Total downsampling of the four stages (the vanilla design's sizes step by it).
STRIDE = 32


def _uses_patch_merging(model):
    from vmamba.models.layers import PatchMerging
    return any(isinstance(m, PatchMerging) for m in model.modules())


def _spatial_dims(example, multiple):
    dims = {}
    for axis, name in ((2, 'height'), (3, 'width')):
        side = example.shape[axis]
        if multiple:
            if side % STRIDE:
                raise ValueError(f'export_model: this model (vanilla design, patch merging) exports H and W as '
                                 f'multiples of {STRIDE}; the example is {tuple(example.shape[2:])}')
            dims[axis] = STRIDE * Dim(f'{name}_blocks', min=2, max=MAX_SIDE // STRIDE)
        else:
            if side < MIN_SIDE:
                raise ValueError(f'export_model: with dynamic H and W the example must be at least {MIN_SIDE} '
                                 f'pixels a side, got {tuple(example.shape[2:])}')
            dims[axis] = Dim(name, min=MIN_SIDE, max=MAX_SIDE)
    return dims


def export_model(model, example, dynamic_batch=True, dynamic_hw=True):
    """``torch.export.export`` of ``model`` on ``example`` (batch, C, H, W) under ``no_grad``: an inference
    program with one scan node per SS2D call and symbolic batch / H / W as asked (see the module docstring)."""
    if example.dim() != 4:
        raise ValueError(f'export_model: example must be (batch, C, H, W), got {tuple(example.shape)}')
    dims = {}
    if dynamic_batch:
        dims[0] = Dim('batch', min=1, max=1 << 16)
        if example.shape[0] == 1:  # a size-1 example would be specialised (broadcasting): trace on two
            example = example.expand(2, *example.shape[1:])
    if dynamic_hw:
        dims.update(_spatial_dims(example, multiple=_uses_patch_merging(model)))
    with torch.no_grad():
        return torch.export.export(model, (example,), dynamic_shapes=(dims or None,))


def scan_nodes(program):
    """The scan nodes of an exported program (its ``vmamba::`` custom-op calls), in graph order."""
    return [n for n in program.graph.nodes
            if n.op == 'call_function' and getattr(n.target, 'namespace', None) == 'vmamba']
