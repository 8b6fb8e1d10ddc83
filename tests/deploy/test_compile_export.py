"""torch.compile (fullgraph, Inductor on CPU) and torch.export of VMamba: the scan is one custom-op node.

Weights are "stressed" (no D skip, long-memory steps, larger B/C) so the output depends on the scan: with the
fresh initialisation the skip dominates and a graph that lost the scan would still match eager closely.
"""
import pytest
import torch

from vmamba.deploy.weights import count_ss2d, stress_weights
from vmamba.deploy.torch_export import MIN_SIDE, export_model, scan_nodes
from vmamba.models import VMamba, VSSM

SMALL = dict(dims=16, depths=(1, 1, 1, 1))
VANILLA = dict(dims=16, depths=(1, 1, 1, 1), version='v0', d_state=4, ssm_ratio=2.0, mlp_ratio=0.0, gated=True,
               conv_bias=True, stem='patchify', downsample='merge')


def _classifier(arch=SMALL):
    torch.manual_seed(0)
    return stress_weights(VSSM(arch, num_classes=10, drop_path_rate=0.0)).eval()


def _scan_matters(model, x):
    """The stressed weights make the scan matter: zeroing the state path (A -> -inf) changes the logits."""
    with torch.no_grad():
        y = model(x)
        saved = [m.A_logs.clone() for m in model.modules() if hasattr(m, 'A_logs')]
        for m in model.modules():
            if hasattr(m, 'A_logs'):
                m.A_logs.fill_(30.0)  # A = -exp(30): every decay is 0, the state forgets at once
        y_short = model(x)
        for m, a in zip([m for m in model.modules() if hasattr(m, 'A_logs')], saved):
            m.A_logs.copy_(a)
    return (y - y_short).abs().max().item()


def test_export_dynamic_batch_and_size_roundtrip(tmp_path):
    model = _classifier()
    x = torch.randn(2, 3, 64, 64)
    assert _scan_matters(model, x) > 100 * 1e-5  # far above the tolerance of the comparisons below
    program = export_model(model, x)
    nodes = scan_nodes(program)
    assert len(nodes) == count_ss2d(model) == 4
    assert {str(n.target) for n in nodes} == {'vmamba.ss2d_scan.default'}
    path = tmp_path / 'vssm.pt2'
    torch.export.save(program, path)
    loaded = torch.export.load(path).module()
    for shape in [(2, 3, 64, 64), (3, 3, 45, 70), (1, 3, MIN_SIDE, 96)]:
        xi = torch.randn(*shape)
        with torch.no_grad():
            torch.testing.assert_close(loaded(xi), model(xi), rtol=1e-5, atol=1e-5)


def test_export_backbone_vanilla_design():
    torch.manual_seed(0)
    backbone = stress_weights(VMamba(arch=VANILLA, drop_path_rate=0.0)).eval()
    program = export_model(backbone, torch.randn(1, 3, 64, 64))
    assert len(scan_nodes(program)) == count_ss2d(backbone)
    xi = torch.randn(3, 3, 96, 64)  # the vanilla design exports sides in steps of 32
    with torch.no_grad():
        for got, want in zip(program.module()(xi), backbone(xi)):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_export_refuses_examples_it_cannot_generalise():
    with pytest.raises(ValueError, match=f'at least {MIN_SIDE}'):
        export_model(_classifier(), torch.randn(1, 3, 32, 64))
    with pytest.raises(ValueError, match='multiples of 32'):
        export_model(VMamba(arch=VANILLA).eval(), torch.randn(1, 3, 64, 70))


def test_compile_fullgraph_forward_and_backward():
    """Inductor on CPU, no graph break (fullgraph): logits and every parameter gradient equal eager's."""
    torch._dynamo.reset()
    model = _classifier().train()
    x = torch.randn(2, 3, 64, 64)
    compiled = torch.compile(model, fullgraph=True)
    loss = compiled(x).square().mean()
    loss.backward()
    got = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    want_loss = model(x).square().mean()
    want_loss.backward()
    torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(got[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert got['layers.0.blocks.0.op.x_proj_weight'].abs().sum() > 0


def test_compile_fullgraph_backbone_inference():
    torch._dynamo.reset()
    torch.manual_seed(0)
    backbone = stress_weights(VMamba(arch=SMALL, drop_path_rate=0.0)).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        got = torch.compile(backbone, fullgraph=True)(x)
        want = backbone(x)
    assert len(got) == 4
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
