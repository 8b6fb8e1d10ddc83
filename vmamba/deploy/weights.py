"""Weight sets for checking that a path runs the scan (no onnx needed; used by the export checks and the tests).

Freshly initialised, an SS2D's output is dominated by its ``D * x`` skip, so a graph or backend that dropped or
garbled the scan would still match eager PyTorch closely. :func:`stress_weights` makes the scan matter.
"""
import torch

__all__ = ['stress_weights', 'count_ss2d']


@torch.no_grad()
def stress_weights(model):
    """Weights for which the output depends on the scan (in place; returns ``model``): every SS2D's ``Ds`` is 0
    (no skip), ``dt_projs_bias`` 0.5 (steps Δ ~ softplus(0.5) ~ 1: long memory) and ``x_proj_weight`` tripled
    (larger B, C and Δ)."""
    from vmamba.models import SS2D
    for m in model.modules():
        if isinstance(m, SS2D):
            m.Ds.zero_()
            m.dt_projs_bias.fill_(0.5)
            m.x_proj_weight.mul_(3.0)
    return model


def count_ss2d(model):
    """Number of SS2D modules: each calls the scan exactly once per forward."""
    from vmamba.models import SS2D
    return sum(isinstance(m, SS2D) for m in model.modules())
