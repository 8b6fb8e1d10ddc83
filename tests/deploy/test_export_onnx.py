"""ONNX export of VMamba with the selective scan lowered to standard ONNX ops (vmamba.deploy, tools/deploy).

Small archs (dims 16, one block a stage) with stress weights (no D skip, long memory: the output depends on the
scan), so that a file that got the scan wrong cannot pass. One exported file is checked at several batch sizes
and input sizes. onnx / onnxruntime are optional dependencies: without them the module is skipped.
"""
import os.path as osp
import sys

import numpy as np
import pytest
import torch

pytest.importorskip('onnx', reason='ONNX export tests need onnx (pip install -e .[deploy])')
ort = pytest.importorskip('onnxruntime', reason='ONNX export tests need onnxruntime (pip install -e .[deploy])')

import onnx  # noqa: E402

from vmamba.deploy import export as E  # noqa: E402
from vmamba.deploy import onnx_scan  # noqa: E402
from vmamba.ops import selective_scan_ref, ss2d_scan_ref  # noqa: E402
from repo_testlib import tool

SMALL_V2 = {'dims': 16, 'depths': (1, 1, 1, 1)}  # final design: d_state 1, no gate, MLP
SMALL_VANILLA = {'dims': 16, 'depths': (1, 1, 1, 1), 'version': 'v0', 'd_state': 16, 'ssm_ratio': 2.0,
                 'mlp_ratio': 0.0, 'gated': True, 'conv_bias': True, 'stem': 'patchify', 'downsample': 'merge'}
ATOL = 1e-4


def small_model(arch, kind='classifier'):
    torch.manual_seed(0)
    model, _ = E.build_model(arch, kind=kind, num_classes=10)
    return E.stress_weights(model)


# ------------------------------------------------------------------------------------------ the lowered ops
def _ss2d_inputs(batch, H, W, Dm, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, H, W, Dm, generator=g)
    delta = torch.randn(batch, H, W, 4, Dm, generator=g) * 2  # some above the softplus threshold
    A = -torch.rand(4 * Dm, N, generator=g) * 2 - 0.1
    B, C = torch.randn(batch, H, W, 4, N, generator=g), torch.randn(batch, H, W, 4, N, generator=g)
    return x, delta, A, B, C, torch.randn(4 * Dm, generator=g), torch.randn(4 * Dm, generator=g)


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=['CPUExecutionProvider'])


@pytest.mark.parametrize('inline', [False, True])
def test_ss2d_function_matches_reference(inline):
    """One lowered SS2D op, fully dynamic: sizes with and without chunk padding, L = 1, d_state 1 and 16."""
    model = onnx_scan.standalone_model('ss2d', inline=inline)
    onnx.checker.check_model(model, full_check=True)
    session = _session(model)
    for batch, H, W, Dm, N in [(1, 1, 1, 3, 1), (2, 3, 5, 4, 2), (1, 7, 7, 8, 16), (2, 14, 9, 6, 1)]:
        args = _ss2d_inputs(batch, H, W, Dm, N)
        y = session.run(None, dict(zip(['x', 'delta', 'A', 'B', 'C', 'D', 'delta_bias'],
                                       [a.numpy() for a in args])))[0]
        ref = ss2d_scan_ref(*args).numpy()
        assert y.shape == ref.shape
        np.testing.assert_allclose(y, ref, atol=2e-5 * np.abs(ref).max(), rtol=0)


@pytest.mark.parametrize('softplus,has_D,has_bias', [(False, True, False), (True, False, True)])
def test_ss2d_function_variants(softplus, has_D, has_bias):
    session = _session(onnx_scan.standalone_model('ss2d', softplus=softplus, has_D=has_D, has_bias=has_bias))
    x, delta, A, B, C, D, bias = _ss2d_inputs(2, 5, 6, 4, 3, seed=1)
    delta = delta if softplus else delta.abs()
    feed = dict(x=x, delta=delta, A=A, B=B, C=C, **({'D': D} if has_D else {}),
                **({'delta_bias': bias.abs()} if has_bias else {}))
    y = session.run(None, {k: v.numpy() for k, v in feed.items()})[0]
    ref = ss2d_scan_ref(x, delta, A, B, C, D if has_D else None, bias.abs() if has_bias else None,
                        delta_softplus=softplus).numpy()
    np.testing.assert_allclose(y, ref, atol=2e-5 * np.abs(ref).max(), rtol=0)


def test_plain_function_matches_reference():
    session = _session(onnx_scan.standalone_model('plain', softplus=True))
    g = torch.Generator().manual_seed(2)
    for batch, K, Dg, N, L in [(2, 4, 3, 2, 17), (1, 2, 5, 16, 100), (1, 1, 2, 1, 1)]:
        u, delta = torch.randn(batch, K * Dg, L, generator=g), torch.randn(batch, K * Dg, L, generator=g)
        A = -torch.rand(K * Dg, N, generator=g)
        B, C = torch.randn(batch, K, N, L, generator=g), torch.randn(batch, K, N, L, generator=g)
        D, bias = torch.randn(K * Dg, generator=g), torch.randn(K * Dg, generator=g)
        y = session.run(None, dict(zip(['u', 'delta', 'A', 'B', 'C', 'D', 'delta_bias'],
                                       [a.numpy() for a in (u, delta, A, B, C, D, bias)])))[0]
        ref = selective_scan_ref(u, delta, A, B, C, D, bias, delta_softplus=True).numpy()
        np.testing.assert_allclose(y, ref, atol=2e-5 * np.abs(ref).max(), rtol=0)


# ------------------------------------------------------------------------------------------ model exports
def _skip_only(model):
    """Replace each SS2D's scan by its D skip alone: what a file that dropped the scan computes."""
    for op in model.modules():
        if type(op).__name__ == 'SS2D':
            op.scan = (lambda o: lambda t: (t * o.Ds.view(4, -1).sum(0)).float())(op)


def test_stress_weights_make_the_scan_matter():
    """Fresh weights: dropping the scan moves the logits by less than the tolerance (the D skip dominates), so a
    parity check on them proves nothing. Stress weights: by far more, so the verification catches it."""
    diffs = []
    for stress in (False, True):
        torch.manual_seed(0)
        model, _ = E.build_model(SMALL_V2, num_classes=10)
        if stress:
            E.stress_weights(model)
        x = E.example_input(model, 2, (64, 64))
        with torch.no_grad():
            good = model(x)
            _skip_only(model)
            diffs.append(float((good - model(x)).abs().max()))
    assert diffs[0] < ATOL < 50 * ATOL < diffs[1]


def test_dynamo_export_parity_dynamic(tmp_path):
    """The default exporter: one file, batch 1/3 and three sizes (odd ones too), within 1e-4 of eager."""
    model = small_model(SMALL_V2)
    path = str(tmp_path / 'v2.onnx')
    facts, checks = E.export_and_verify(model, path, shape=(64, 64), batch=1, atol=ATOL,
                                        cases=[(1, (64, 64)), (3, (96, 160)), (2, (65, 97))])
    assert osp.isfile(path) and facts['scans'] == E.count_ss2d(model) == 4
    assert all(c.max_abs <= ATOL for c in checks) and len(checks) == 3  # logits: scale < 1
    graph = onnx.load(path)
    assert {n.domain for n in graph.graph.node} <= {'', 'ai.onnx'}  # standard ops only, scans inlined
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, False, True, True]  # dynamic batch, H, W


def test_torchscript_export_parity_vanilla(tmp_path):
    """The legacy exporter with the lowering, on the gated vanilla design (d_state 16, patch merging), as a
    backbone (four feature maps): two batches and sizes from one file."""
    model = small_model(SMALL_VANILLA, kind='backbone')
    path = str(tmp_path / 'vanilla.onnx')
    facts, checks = E.export_and_verify(model, path, shape=(64, 64), batch=1, exporter='torchscript',
                                        inline=False, atol=ATOL, cases=[(1, (64, 64)), (2, (96, 128))])
    assert facts['scans'] == 4 and all(c.within(ATOL) for c in checks)
    names = [o.name for o in onnx.load(path).graph.output]
    assert names == ['out0', 'out1', 'out2', 'out3']


def _all_nodes(path):
    return E._count_all_nodes(onnx.load(path))


def test_node_count_does_not_depend_on_input_size(tmp_path):
    """Static exports at two sizes have the same nodes (the scan loops read their trip counts at run time)."""
    model = small_model(SMALL_V2)
    counts = []
    for shape in [(64, 64), (128, 96)]:
        path = str(tmp_path / f'{shape[0]}x{shape[1]}.onnx')
        E.export_onnx(model, path, shape=shape, batch=1, dynamic=False, exporter='torchscript')
        counts.append(_all_nodes(path))
        scans = sum(n.op_type == 'Scan' for n in onnx.load(path).graph.node)
        assert scans == 2 * E.count_ss2d(model)  # two Scan loops per SS2D call, whatever the size
    assert counts[0] == counts[1]


def _untracked_scan(monkeypatch):
    """Make the model call the chunked PyTorch backend directly, bypassing the custom op: what the legacy
    exporter used to trace (and get wrong, dropping its in-place updates)."""
    import vmamba.models.ss2d as ss2d_module
    from vmamba.ops import torch_scan

    def direct(x, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True, backend=None):
        return torch_scan.ss2d_fwd(x, delta, A, B, C, D, delta_bias, delta_softplus)[0]
    monkeypatch.setattr(ss2d_module, 'ss2d_selective_scan', direct)


@pytest.mark.parametrize('how', ['traced_scan', 'no_symbolic'])
def test_unlowered_legacy_export_is_refused(tmp_path, monkeypatch, how):
    model = small_model(SMALL_V2)
    path = str(tmp_path / 'wrong.onnx')
    if how == 'traced_scan':
        _untracked_scan(monkeypatch)
    with pytest.raises(E.ExportError, match='Refusing'):
        E.export_and_verify(model, path, shape=(64, 64), exporter='torchscript', lower=how != 'no_symbolic')
    assert not osp.exists(path)
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary file left either


def test_failed_verification_writes_nothing(tmp_path):
    model = small_model(SMALL_V2)
    path = str(tmp_path / 'strict.onnx')
    with pytest.raises(E.ExportError, match='was not written'):
        E.export_and_verify(model, path, shape=(64, 64), exporter='torchscript', atol=1e-12)
    assert not osp.exists(path) and list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ the tool
def _tool():
    return tool('deploy/export_onnx')


def test_cli_end_to_end(tmp_path, capsys):
    out = str(tmp_path / 'cli.onnx')
    arch = "{'dims': 16, 'depths': (1, 1, 1, 1)}"
    assert _tool().main([arch, '--shape', '64', '64', '--stress-weights', '--exporter', 'torchscript',
                         '--num-classes', '10', '--out', out]) == 0
    text = capsys.readouterr().out
    assert osp.isfile(out)
    assert 'max abs err' in text and 'img/s' in text and f'wrote {out}' in text
    assert 'batch 1 64x64' in text and 'batch 2 96x128' in text  # the default second case


@pytest.mark.parametrize('argv,message', [
    (['nope'], "error: Unknown VMamba arch 'nope'"),
    (['tiny', '--checkpoint', 'missing.pth'], "error: Checkpoint file not found: 'missing.pth'"),
    (['configs/missing.py'], "error: Config file not found: 'configs/missing.py'"),
    (['tiny', '--shape', '16', '16'], 'error: A dynamic export traces on an input of at least'),
])
def test_cli_user_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        _tool().main(argv)
    assert str(info.value.code).startswith(message) and '\n' not in str(info.value.code)


def test_missing_onnx_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # import fails
    with pytest.raises(E.ExportError, match=r'pip install -e \.\[deploy\]') as info:
        E.require_onnx()
    assert '\n' not in str(info.value)
