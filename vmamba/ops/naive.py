"""Readable reference implementations of the selective scan and the SS2D cross-scan.

These are the ground truth for every faster path in :mod:`vmamba.ops`. They favour clarity over speed:
the scan is the plain sequential recurrence, one time step per Python iteration.

Shapes (the official VMamba / mamba conventions)::

    u, delta     (batch, K*D, L)      K channel groups (the 4 scan routes in SS2D) of D channels
    A            (K*D, N)             fp32, negative real (A = -exp(A_log))
    B, C         (batch, K, N, L)     one B/C per group, shared by its D channels
    D            (K*D,)               fp32 skip
    delta_bias   (K*D,)               fp32

    delta_t = softplus(delta_t + delta_bias)           (identity above 20, as torch's softplus)
    h_t     = exp(delta_t * A) * h_{t-1} + delta_t * u_t * B_t
    y_t     = <h_t, C_t> + D * u_t
"""
import torch
import torch.nn.functional as F

from .routes import route as route_ref  # route k's order is a definition, shared with the op

__all__ = ['selective_scan_ref', 'cross_scan_ref', 'cross_merge_ref', 'ss2d_scan_ref', 'route_ref']


def selective_scan_ref(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False, out_float=True):
    """Sequential selective scan. Math runs in fp32 (fp64 when the inputs are fp64)."""
    in_dtype = u.dtype
    dtype = torch.promote_types(in_dtype, torch.float32)
    u, delta, A, B, C = (t.to(dtype) for t in (u, delta, A, B, C))
    batch, channels, length = u.shape
    groups = B.shape[1]
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)  # threshold=20: identity above it
    # Each group's B/C is shared by channels // groups consecutive channels.
    B = B.repeat_interleave(channels // groups, dim=1)  # (batch, K*D, N, L)
    C = C.repeat_interleave(channels // groups, dim=1)
    h = u.new_zeros(batch, channels, A.shape[1])
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[..., None] * B[..., t]
        ys.append((h * C[..., t]).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(batch, channels, 0)
    if D is not None:
        y = y + u * D.to(dtype)[:, None]
    return y if out_float or in_dtype == torch.float64 else y.to(in_dtype)


def cross_scan_ref(x):
    """(batch, C, H, W) -> (batch, 4, C, H*W): row-major, column-major, and both reversed."""
    rows = x.flatten(2)
    cols = x.transpose(2, 3).flatten(2)
    return torch.stack([rows, cols, rows.flip(-1), cols.flip(-1)], dim=1)


def cross_merge_ref(ys, H, W):
    """(batch, 4, C, H*W) -> (batch, C, H, W): the adjoint of :func:`cross_scan_ref`."""
    batch, _, channels, _ = ys.shape
    rows = ys[:, 0] + ys[:, 2].flip(-1)
    cols = ys[:, 1] + ys[:, 3].flip(-1)
    cols = cols.view(batch, channels, W, H).transpose(2, 3)
    return rows.view(batch, channels, H, W) + cols


def ss2d_scan_ref(x, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True):
    """The SS2D core: scan the 4 routes of x and merge them back (channels-last, as the fused op).

    x (batch, H, W, D); delta (batch, H, W, 4, D); B, C (batch, H, W, 4, N); A (4*D, N); D, delta_bias (4*D,).
    Route k uses its own delta/B/C maps, read in route k's order. Returns the merged (batch, H, W, D) sum of the
    four scans, in fp32.
    """
    batch, H, W, channels = x.shape
    x, delta, B, C = x.permute(0, 3, 1, 2), delta.permute(0, 3, 4, 1, 2), B.permute(0, 3, 4, 1, 2), C.permute(0, 3, 4, 1, 2)
    us = torch.stack([route_ref(x, k) for k in range(4)], dim=1)
    deltas = torch.stack([route_ref(delta[:, k], k) for k in range(4)], dim=1)
    Bs = torch.stack([route_ref(B[:, k], k) for k in range(4)], dim=1)
    Cs = torch.stack([route_ref(C[:, k], k) for k in range(4)], dim=1)
    ys = selective_scan_ref(us.flatten(1, 2), deltas.flatten(1, 2), A, Bs, Cs, D, delta_bias,
                            delta_softplus=delta_softplus, out_float=True)
    return cross_merge_ref(ys.view(batch, 4, channels, H * W), H, W).permute(0, 2, 3, 1)
