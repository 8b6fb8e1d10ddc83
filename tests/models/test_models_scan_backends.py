"""Whole models with the Triton backend (interpreted on CPU) against the torch backend, forward and backward, on a
small input with weights for which the scan dominates the output: VMamba-T itself, and the vanilla design
(d_state 16, SiLU(z) gate, patch merging) at one block per stage and width 32, since vanilla-T's 15 d_state-16
layers are slow under the interpreter."""
import pytest
import torch

from scan_testlib import DEVICE
from vmamba.deploy.weights import stress_weights
from vmamba.models import VSSM
from vmamba.models.variants import ARCH_SETTINGS


def _run(model, x, backend, monkeypatch):
    monkeypatch.setenv('VMAMBA_SCAN_BACKEND', backend)
    model.zero_grad()
    out = model(x)
    out.square().sum().backward()
    return out.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


VANILLA_SMALL = {k: v for k, v in ARCH_SETTINGS['vanilla_tiny'].items() if k not in ('checkpoint',)}
VANILLA_SMALL.update(dims=32, depths=(1, 1, 1, 1))


@pytest.mark.parametrize('arch', ['tiny', VANILLA_SMALL], ids=['tiny', 'vanilla_design'])
def test_model_triton_equals_torch(arch, monkeypatch):
    torch.manual_seed(0)
    model = stress_weights(VSSM(arch=arch, num_classes=10, drop_path_rate=0.0)).to(DEVICE)
    x = torch.randn(1, 3, 32, 32, device=DEVICE)
    out_t, grads_t = _run(model, x, 'torch', monkeypatch)
    out_k, grads_k = _run(model, x, 'triton', monkeypatch)
    assert out_t.abs().max() > 0.1  # the logits are not dominated by biases
    torch.testing.assert_close(out_k, out_t, rtol=1e-4, atol=1e-4)
    assert grads_k.keys() == grads_t.keys() and len(grads_t) > 30
    for name, g in grads_t.items():
        scale = g.abs().max().item()
        err = (grads_k[name] - g).abs().max().item()
        assert err <= 1e-3 * scale + 1e-6, f'{name}: {err:.2e} vs max |grad| {scale:.2e}'
