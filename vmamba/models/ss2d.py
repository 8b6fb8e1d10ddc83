"""SS2D: the 2D selective-scan mixer at the heart of every VSS block.

For a channels-last map x of shape (B, H, W, C)::

    x -> in_proj -> depthwise 3x3 conv -> SiLU                       (B, H, W, Di), Di = ssm_ratio * C
      -> per route k in {row-major, column-major, both reversed}:
             x_proj[k]:  (dt_low[k], B[k], C[k]) = W_x[k] @ x          ranks R, N, N per position
             dt_proj[k]: delta[k] = W_dt[k] @ dt_low[k]                 Di per position
             y[k] = S6 scan of x along route k with (delta[k] + bias[k], A[k], B[k], C[k], D[k])
      -> merge: sum of the four y[k], each put back in (H, W) order
      -> LayerNorm(Di) [-> * SiLU(z) in the gated vanilla design] -> out_proj    (B, H, W, C)

The projections act per position, so they are applied to the un-permuted map and only the scan walks the
routes: the model hands x and the per-route delta/B/C maps to :func:`vmamba.ops.ss2d_selective_scan`, the one
narrow call into the op, which reads the four routes in place (Triton kernels on GPU; on CPU the compiled numba
scan, with the chunked PyTorch scan as fallback and reference; docs/design/scan-kernels.md). Everything stays
channels-last, (B, H, W, ...) with the channels innermost, from in_proj to out_proj: the conv works in the
channels_last memory format (its weight is stored that way too, :func:`.layers.channels_last_conv2d`), so no
activation or weight is copied to change its layout.

Parameter names and shapes are those of the official checkpoints:
``in_proj``, ``conv2d``, ``x_proj_weight`` (4, R+2N, Di), ``dt_projs_weight`` (4, Di, R),
``dt_projs_bias`` (4, Di), ``A_logs`` (4*Di, N), ``Ds`` (4*Di,), ``out_norm``, ``out_proj``.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vmamba.ops import ss2d_selective_scan

from .layers import channels_last_conv2d

__all__ = ['SS2D']

K_ROUTES = 4


class SS2D(nn.Module):
    """2D selective scan over four routes.

    Args:
        dim: input/output channels C.
        d_state: SSM state size N per channel.
        ssm_ratio: inner width Di = int(ssm_ratio * C).
        gated: vanilla design: in_proj also yields z and the output is multiplied by SiLU(z).
        conv_bias: bias in the depthwise conv (vanilla: True).
        d_conv: depthwise conv kernel size.
        dt_min, dt_max, dt_init_floor: range of the initial step size (Mamba initialisation).
    """

    def __init__(self, dim, d_state=1, ssm_ratio=1.0, gated=False, conv_bias=False, d_conv=3,
                 dt_min=1e-3, dt_max=0.1, dt_init_floor=1e-4):
        super().__init__()
        self.d_inner = int(ssm_ratio * dim)
        self.d_state = d_state
        self.dt_rank = math.ceil(dim / 16)
        self.gated = gated
        Di, N, R = self.d_inner, d_state, self.dt_rank

        self.in_proj = nn.Linear(dim, Di * (2 if gated else 1), bias=False)
        self.conv2d = channels_last_conv2d(Di, Di, kernel_size=d_conv, padding=(d_conv - 1) // 2, groups=Di,
                                           bias=conv_bias)
        self.act = nn.SiLU()
        self.x_proj_weight = nn.Parameter(torch.empty(K_ROUTES, R + 2 * N, Di))
        self.dt_projs_weight = nn.Parameter(torch.empty(K_ROUTES, Di, R))
        self.dt_projs_bias = nn.Parameter(torch.empty(K_ROUTES, Di))
        self.A_logs = nn.Parameter(torch.empty(K_ROUTES * Di, N))
        self.Ds = nn.Parameter(torch.empty(K_ROUTES * Di))
        self.out_norm = nn.LayerNorm(Di)
        self.out_proj = nn.Linear(Di, dim, bias=False)
        self.reset_ssm_parameters(dt_min, dt_max, dt_init_floor)

    @torch.no_grad()
    def reset_ssm_parameters(self, dt_min=1e-3, dt_max=0.1, dt_init_floor=1e-4):
        """The Mamba initialisation, independently drawn for each of the four routes.

        * x_proj: PyTorch's default Linear init, U(+-1/sqrt(Di)).
        * dt_proj weight: U(+-1/sqrt(R)); bias: softplus^-1(dt), dt ~ logU[dt_min, dt_max] floored at
          dt_init_floor, so the initial step sizes softplus(bias) span that range.
        * A_log[:, n] = log(n + 1) ("S4D-real": A = -(1..N)); D = 1.
        """
        Di, N, R = self.d_inner, self.d_state, self.dt_rank
        nn.init.uniform_(self.x_proj_weight, -Di ** -0.5, Di ** -0.5)
        nn.init.uniform_(self.dt_projs_weight, -R ** -0.5, R ** -0.5)
        dt = torch.exp(torch.rand(K_ROUTES, Di) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus
        self.A_logs.copy_(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(K_ROUTES * Di, 1))
        self.Ds.fill_(1.0)

    def forward(self, x):
        """x: (B, H, W, C) channels-last -> (B, H, W, C)."""
        if self.gated:  # two products instead of one and a split, so that x and z are both contiguous
            x, z = F.linear(x, self.in_proj.weight[:self.d_inner]), F.linear(x, self.in_proj.weight[self.d_inner:])
        else:
            x = self.in_proj(x)
        # (B, H, W, Di) -> (B, Di, H, W) is a view in channels_last memory; the conv keeps that format, so the
        # permute back is a view again: the scan reads the conv output in place.
        x = self.act(self.conv2d(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
        y = self.out_norm(self.scan(x)).to(x.dtype)  # (B, H, W, Di), fp32 out of the scan
        if self.gated:
            y = y * self.act(z)
        return self.out_proj(y)

    def scan(self, x):
        """The four-route selective scan of x (B, H, W, Di); returns the merged (B, H, W, Di) in fp32.

        x_proj is one matrix product whose output (B, H, W, 4, R + 2N) is already the op's layout: B and C are
        strided views of it, no copy. dt_proj runs per route as a batched product; its output is laid out route
        by route, (4, B, H, W, Di) in memory, which the op reads in place through its strides. No
        ``contiguous()`` copy remains around the op in the forward or the backward (autograd's backward of the
        split concatenates dt_low/B/C gradients, (R + 2N) values per route and position, a small tensor).
        """
        N, R = self.d_state, self.dt_rank
        Bsz, H, W, Di = x.shape
        x_dbl = (x.reshape(-1, Di) @ self.x_proj_weight.to(x.dtype).flatten(0, 1).t()).view(Bsz, H, W, 4, R + 2 * N)
        dt_low, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=-1)
        delta = torch.einsum('bhwkr,kdr->bhwkd', dt_low, self.dt_projs_weight.to(x.dtype))
        # The SSM parameters enter the scan in fp32 whatever the activations' dtype (fp64 stays fp64).
        fp32 = torch.promote_types(self.A_logs.dtype, torch.float32)
        A = -torch.exp(self.A_logs.to(fp32))
        return ss2d_selective_scan(x, delta, A, Bs, Cs, self.Ds.to(fp32), self.dt_projs_bias.to(fp32).flatten(),
                                   delta_softplus=True)

    def extra_repr(self):
        return f'd_inner={self.d_inner}, d_state={self.d_state}, dt_rank={self.dt_rank}, gated={self.gated}'
