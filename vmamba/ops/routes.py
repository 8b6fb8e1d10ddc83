"""The four SS2D scan routes as tensor permutations (the backends' shared building blocks).

Route k flattens an (H, W) map into a sequence of length L = H*W (official ``cross2d`` order):

    k = 0: row-major            l = h*W + w
    k = 1: column-major         l = w*H + h
    k = 2: row-major, reversed  l = L-1 - (h*W + w)
    k = 3: column-major, rev.   l = L-1 - (w*H + h)

Each route is a permutation, so its adjoint is its inverse: :func:`cross_merge_tensor` (sum of the four inverse
routes) is the adjoint of :func:`cross_scan_tensor` (one input copied along the four routes), and
:func:`unroute_maps` is the adjoint of :func:`route_maps` (four inputs, one route each). The autograd functions
:class:`CrossScan` / :class:`CrossMerge` use exactly that: each one's backward is the other's forward.
"""
import torch

__all__ = ['route_index', 'cross_scan_tensor', 'cross_merge_tensor', 'route_maps', 'unroute_maps',
           'CrossScan', 'CrossMerge']


def route_index(k, H, W):
    """Sequence position -> flat (h*W + w) spatial index for route k (used to check the kernels' index maths)."""
    grid = torch.arange(H * W).view(H, W)
    flat = grid.flatten() if k % 2 == 0 else grid.t().flatten()
    return flat.flip(0) if k >= 2 else flat


def route(t, k):
    """(..., H, W) -> (..., H*W) in route k's order (a copy)."""
    flat = t.flatten(-2) if k % 2 == 0 else t.transpose(-1, -2).flatten(-2)
    return flat.flip(-1) if k >= 2 else flat


def unroute(s, k, H, W):
    """(..., H*W) in route k's order -> (..., H, W): the inverse of :func:`route`."""
    if k >= 2:
        s = s.flip(-1)
    return s.unflatten(-1, (H, W)) if k % 2 == 0 else s.unflatten(-1, (W, H)).transpose(-1, -2)


def cross_scan_tensor(x):
    """(batch, C, H, W) -> (batch, 4, C, H*W): x read along each of the four routes."""
    return torch.stack([route(x, k) for k in range(4)], dim=1)


def cross_merge_tensor(ys, H, W):
    """(batch, 4, C, H*W) -> (batch, C, H, W): the sum of the four routes mapped back (adjoint of cross-scan)."""
    rows = ys[:, 0] + ys[:, 2].flip(-1)
    cols = ys[:, 1] + ys[:, 3].flip(-1)
    return rows.unflatten(-1, (H, W)) + cols.unflatten(-1, (W, H)).transpose(-1, -2)


def route_maps(t):
    """(batch, 4, C, H, W) -> (batch, 4, C, H*W): map k read along route k (per-route delta / B / C)."""
    return torch.stack([route(t[:, k], k) for k in range(4)], dim=1)


def unroute_maps(s, H, W):
    """(batch, 4, C, H*W) -> (batch, 4, C, H, W): the inverse (and adjoint) of :func:`route_maps`."""
    return torch.stack([unroute(s[:, k], k, H, W) for k in range(4)], dim=1)


class CrossScan(torch.autograd.Function):
    """Differentiable cross-scan whose backward is the cross-merge (its adjoint)."""

    @staticmethod
    def forward(ctx, x):
        ctx.hw = x.shape[-2:]
        return cross_scan_tensor(x)

    @staticmethod
    def backward(ctx, dys):
        return cross_merge_tensor(dys, *ctx.hw)


class CrossMerge(torch.autograd.Function):
    """Differentiable cross-merge whose backward is the cross-scan (its adjoint)."""

    @staticmethod
    def forward(ctx, ys, H, W):
        return cross_merge_tensor(ys, H, W)

    @staticmethod
    def backward(ctx, dy):
        return cross_scan_tensor(dy), None, None
