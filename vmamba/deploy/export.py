"""Export a VMamba classifier or backbone to ONNX, with the selective scan lowered, and verify the file.

The flow (:func:`export_and_verify`, what ``tools/deploy/export_onnx.py`` runs):

1. :func:`build_model`: ``VSSM(arch)`` (classifier), ``VMamba(arch=...)`` (backbone), or the ``model.backbone``
   of an mmengine config; optionally weights from a checkpoint, or :func:`stress_weights` (a weight set whose
   output depends on the scan, for checking an export without a checkpoint).
2. :func:`export_onnx`: ``torch.onnx.export`` (the dynamo exporter by default) with every
   ``torch.ops.vmamba.ss2d_scan`` / ``selective_scan`` call translated to one placeholder node, then
   :func:`vmamba.deploy.onnx_scan.lower_scans` replaces the placeholders by standard ONNX operators
   (two ``Scan`` loops a call: the node count does not depend on the input size, and batch, H and W are
   dynamic). The export is refused (:class:`ExportError`) unless the graph has exactly one lowered scan per
   ``SS2D`` module: a scan that was traced into something else (as the legacy exporter does with the chunked
   PyTorch backend, whose in-place updates it drops) never reaches a file.
3. :func:`verify_onnx`: onnxruntime (CPU) against eager PyTorch on the same inputs, at several batch sizes and
   input sizes from the one file; max abs / rel error and img/s. The file is kept only if the error is within
   the tolerance.

onnx and onnxruntime are imported lazily (:func:`require_onnx`), so the rest of the package works without them.
"""
import ast
import contextlib
import dataclasses
import os
import os.path as osp
import re
import tempfile
import time
import warnings

import torch

from vmamba.errors import CheckpointReadError, ToolError

from .weights import count_ss2d, stress_weights

try:
    from . import onnx_scan
except ImportError:  # onnx missing: require_onnx() says so before anything needs the lowering
    onnx_scan = None

__all__ = ['ExportError', 'require_onnx', 'build_model', 'stress_weights', 'count_ss2d', 'example_input',
           'export_onnx', 'verify_onnx', 'export_and_verify', 'Check', 'EXPORTERS', 'SIZE_MULTIPLE', 'min_side']

#: ``--exporter`` choices: the dynamo exporter (torch.export; default) and the TorchScript (legacy) one.
EXPORTERS = ('dynamo', 'torchscript')
#: The total stride of every VMamba: dynamic H and W are declared as multiples of it.
SIZE_MULTIPLE = 32
INSTALL_HINT = 'install them with `pip install -e .[deploy]` or `python tools/install.py --deploy`'


class ExportError(ToolError):
    """An export that cannot be done or would be wrong; the tool prints the message and exits with status 1."""


def require_onnx(runtime=True):
    """Import onnx (and onnxruntime, checking onnxscript too, which the dynamo exporter needs); a one-line
    :class:`ExportError` if any is missing. Returns onnx, or (onnx, onnxruntime) with ``runtime``."""
    missing = []
    modules = []
    for name in ('onnx',) + (('onnxruntime', 'onnxscript') if runtime else ()):
        try:
            modules.append(__import__(name))
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(f'ONNX export needs {", ".join(missing)}, which {"is" if len(missing) == 1 else "are"} '
                          f'not installed: {INSTALL_HINT}.')
    return modules[:2] if runtime else modules[0]


# ----------------------------------------------------------------------------------------------------- models
def _looks_like_path(target):
    return target.endswith('.py') or os.sep in target or '/' in target


def build_model(target, kind='classifier', checkpoint=None, key=None, num_classes=1000, out_indices=None):
    """The model to export, in eval mode, and a short description of it.

    ``target``: a variant name (``arch_names()``), a custom arch dict (or its Python literal, as the command
    line gives it: ``"{'dims': 32, 'depths': (1, 1, 2, 1)}"``), or an mmengine config file (its
    ``model.backbone``, which must be ``type='VMamba'``; ``kind`` is then 'backbone'). ``kind``: 'classifier'
    (:class:`~vmamba.models.VSSM`) or 'backbone' (:class:`~vmamba.models.VMamba`). ``checkpoint``: an official
    ImageNet file, a plain state dict, or an mmengine checkpoint of a detector/segmentor/classifier (keys
    under ``backbone.`` are found).
    """
    from vmamba.models import VMamba, VSSM, arch_names
    from vmamba.models.checkpoint import load_official_weights, load_pretrained

    if checkpoint is not None and not osp.isfile(checkpoint):
        raise ExportError(f'Checkpoint file not found: {checkpoint!r}. Pass the .pth of this model, or leave '
                          '--checkpoint out to export freshly initialised weights (add --stress-weights to make '
                          'the verification meaningful).')
    settings = {}
    if isinstance(target, str) and target.lstrip().startswith('{'):
        try:
            target = ast.literal_eval(target)
        except (ValueError, SyntaxError) as err:
            raise ExportError(f'Cannot read the custom arch {target!r} ({err}); write a Python dict, e.g. '
                              '"{\'dims\': 32, \'depths\': (1, 1, 2, 1)}".') from err
    if isinstance(target, str) and _looks_like_path(target):
        if not osp.isfile(target):
            raise ExportError(f'Config file not found: {target!r}. Pass a config under configs/ or a variant name '
                              f'({", ".join(arch_names())}).')
        from mmengine.config import Config
        backbone = Config.fromfile(target).get('model', {}).get('backbone')
        if not backbone or backbone.get('type') != 'VMamba':
            found = 'no model.backbone' if not backbone else f"model.backbone.type={backbone.get('type')!r}"
            raise ExportError(f'{target} has {found}; the exporter takes configs whose backbone is '
                              "dict(type='VMamba', ...).")
        settings = {k: v for k, v in backbone.items() if k not in ('type', 'init_cfg', 'pretrained')}
        arch, kind = settings.pop('arch', 'tiny'), 'backbone'
    else:
        arch = target
    if kind not in ('classifier', 'backbone'):
        raise ExportError(f'Unknown model kind {kind!r}: use classifier or backbone.')
    try:
        if kind == 'classifier':
            model = VSSM(arch, num_classes=num_classes)
        else:
            if out_indices is not None:
                settings['out_indices'] = tuple(out_indices)
            settings.pop('frozen_stages', None)
            settings.pop('with_cp', None)
            model = VMamba(arch=arch, **settings)
    except (KeyError, ValueError, TypeError) as err:
        raise ExportError(str(err.args[0]) if err.args else str(err)) from err
    if checkpoint is not None:
        _load(model, checkpoint, key, kind, load_official_weights, load_pretrained)
    name = model.arch_name if model.arch_name != 'custom' else f'custom {arch}'
    return model.eval(), f'{kind} {name}'


def _load(model, path, key, kind, load_official_weights, load_pretrained):
    from vmamba.models.checkpoint import extract_state_dict, load_checkpoint_file
    try:
        ckpt = load_checkpoint_file(path)
        state = extract_state_dict(ckpt, key)
    except CheckpointReadError:
        raise  # already names the file and what to do (e.g. a refused file: the opt-in)
    except (KeyError, ValueError, TypeError, FileNotFoundError) as err:
        raise ExportError(f'{path}: {err.args[0] if err.args else err}') from err
    prefix = 'backbone.' if any(k.startswith('backbone.') for k in state) else None
    if kind == 'classifier':
        load_official_weights(model, state, prefix=prefix)
    else:
        load_pretrained(model, state, prefix=prefix)


def example_input(model, batch, shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, model.in_channels, *shape, generator=gen)


def _output_names(model):
    from vmamba.models import VSSM
    if isinstance(model, VSSM):
        return ['logits']
    return [f'out{i}' for i in model.out_indices]


# ----------------------------------------------------------------------------------------------------- export
def _placeholder_schemas():
    """Register the placeholder ops with onnx (once), so that onnxscript can emit them."""
    from onnx import defs
    if defs.has(onnx_scan.SS2D_OP, onnx_scan.PLACEHOLDER_DOMAIN):
        return
    FP = defs.OpSchema.FormalParameter
    opt = defs.OpSchema.FormalParameterOption.Optional
    floats = ['tensor(float)', 'tensor(float16)', 'tensor(bfloat16)', 'tensor(double)']
    for name, first in ((onnx_scan.SS2D_OP, 'x'), (onnx_scan.PLAIN_OP, 'u')):
        defs.register_schema(defs.OpSchema(
            name, onnx_scan.PLACEHOLDER_DOMAIN, 1, 'VMamba selective-scan placeholder (replaced before saving)',
            inputs=[FP(first, 'T'), FP('delta', 'T'), FP('A', 'F'), FP('B', 'T'), FP('C', 'T'),
                    FP('D', 'F', param_option=opt), FP('delta_bias', 'F', param_option=opt)],
            outputs=[FP('y', 'tensor(float)' if name == onnx_scan.SS2D_OP else 'O')],
            type_constraints=[('T', floats, ''), ('F', floats, ''), ('O', floats, '')],
            attributes=[defs.OpSchema.Attribute(a, defs.OpSchema.AttrType.INT, required=False)
                        for a in ('delta_softplus', 'out_float', 'has_D', 'has_bias')]))


def _present(D, delta_bias):
    return [t for t in (D, delta_bias) if t is not None], dict(has_D=int(D is not None),
                                                               has_bias=int(delta_bias is not None))


def _dynamo_translations():
    import onnxscript
    from onnxscript import ir
    _placeholder_schemas()
    ph = onnxscript.values.Opset(onnx_scan.PLACEHOLDER_DOMAIN, 1)

    def typed(y, like=None):  # the placeholder has no type inference: say what it returns
        y.dtype = like.dtype if like is not None else ir.DataType.FLOAT
        return y

    def ss2d(x, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True, backend='auto'):
        extra, flags = _present(D, delta_bias)
        return typed(ph.SS2DScan(x, delta, A, B, C, *extra, delta_softplus=int(bool(delta_softplus)), **flags))

    def plain(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False, out_float=True, backend='auto'):
        extra, flags = _present(D, delta_bias)
        y = ph.SelectiveScan(u, delta, A, B, C, *extra, delta_softplus=int(bool(delta_softplus)),
                             out_float=int(bool(out_float)), **flags)
        return typed(y, None if out_float else u)

    return {torch.ops.vmamba.ss2d_scan.default: ss2d, torch.ops.vmamba.selective_scan.default: plain}


def _torchscript_symbolics(opset):
    """Register TorchScript-exporter symbolics for the two ops (idempotent)."""
    from torch.onnx import symbolic_helper as sh

    def split(D, delta_bias):
        present = [t for t in (D, delta_bias) if not sh._is_none(t)]
        return present, dict(has_D_i=int(not sh._is_none(D)), has_bias_i=int(not sh._is_none(delta_bias)))

    def ss2d(g, x, delta, A, B, C, D, delta_bias, delta_softplus, backend):
        extra, flags = split(D, delta_bias)
        out = g.op(f'{onnx_scan.PLACEHOLDER_DOMAIN}::{onnx_scan.SS2D_OP}', x, delta, A, B, C, *extra,
                   delta_softplus_i=int(sh._maybe_get_const(delta_softplus, 'b')), **flags)
        return out.setType(x.type().with_dtype(torch.float32)) if x.type().kind() == 'TensorType' else out

    def plain(g, u, delta, A, B, C, D, delta_bias, delta_softplus, out_float, backend):
        extra, flags = split(D, delta_bias)
        out_f = int(sh._maybe_get_const(out_float, 'b'))
        out = g.op(f'{onnx_scan.PLACEHOLDER_DOMAIN}::{onnx_scan.PLAIN_OP}', u, delta, A, B, C, *extra,
                   delta_softplus_i=int(sh._maybe_get_const(delta_softplus, 'b')), out_float_i=out_f, **flags)
        if u.type().kind() == 'TensorType' and out_f:
            out.setType(u.type().with_dtype(torch.float32))
        elif u.type().kind() == 'TensorType':
            out.setType(u.type())
        return out

    torch.onnx.register_custom_op_symbolic('vmamba::ss2d_scan', ss2d, opset)
    torch.onnx.register_custom_op_symbolic('vmamba::selective_scan', plain, opset)


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        yield


def _non_standard_nodes(model):
    """(domain, op) of nodes that are neither standard ONNX nor calls of the model's local functions."""
    local = {(f.domain, f.name) for f in model.functions}
    return sorted({(n.domain, n.op_type) for n in model.graph.node
                   if n.domain not in ('', 'ai.onnx') and (n.domain, n.op_type) not in local})


def export_onnx(model, path, shape=(224, 224), batch=2, dynamic=True, exporter='dynamo', opset=18, inline=True,
                lower=True, name=None):
    """Export ``model`` (eval mode) to ``path``; return a dict of facts (export time, node count, ...).

    ``shape``: the example input size (H, W); ``batch``: the example batch. With ``dynamic`` the file takes any
    batch, and any H, W >= :func:`min_side` ('dynamo' exporter: ``torch.export``, whose symbolic shapes cover
    every size; the default) or H, W multiples of :data:`SIZE_MULTIPLE` ('torchscript', the legacy exporter:
    its trace bakes the model's size-dependent padding branches). Both emit one placeholder per scan call and
    share the lowering. ``inline``: expand the scan functions into the
    graph (else they stay model-local ONNX functions). ``lower=False`` exports without the scan translation
    (only to show that such a graph is refused). Raises :class:`ExportError` instead of writing a wrong file;
    ``name`` is the file name its messages use (default ``path``).
    """
    name = name or path
    onnx = require_onnx(runtime=False)
    if exporter not in EXPORTERS:
        raise ExportError(f'Unknown exporter {exporter!r}: use one of {", ".join(EXPORTERS)}.')
    if opset < onnx_scan.MIN_OPSET:
        raise ExportError(f'--opset {opset} is too old for the scan lowering: use {onnx_scan.MIN_OPSET} or newer.')
    H, W = shape
    if dynamic and exporter == 'torchscript' and (H % SIZE_MULTIPLE or W % SIZE_MULTIPLE):
        raise ExportError(f'A dynamic TorchScript export takes multiples of {SIZE_MULTIPLE} (got --shape {H} {W}); '
                          f'pass --shape with multiples of {SIZE_MULTIPLE}, --static, or use --exporter dynamo.')
    if dynamic and exporter == 'dynamo' and min(H, W) < min_side():
        raise ExportError(f'A dynamic export traces on an input of at least {min_side()} pixels a side (got --shape '
                          f'{H} {W}); pass a larger --shape (the file takes any size >= {min_side()}), or --static.')
    if dynamic and batch < 2:
        batch = 2  # a size-1 example dimension would be specialised
    model = model.eval()
    x = example_input(model, batch, shape)
    outputs = _output_names(model)
    expected = count_ss2d(model)
    start = time.perf_counter()
    with torch.no_grad(), _quiet():
        if exporter == 'dynamo':
            proto = _export_dynamo(model, x, outputs, dynamic, opset, lower)
        else:
            proto = _export_torchscript(model, x, outputs, dynamic, opset, lower)
    traced = time.perf_counter() - start
    placeholders, _ = onnx_scan.count_scan_nodes(proto)
    if placeholders != expected:
        raise ExportError(
            f'Refusing to write {name}: the {exporter} export captured {placeholders} selective-scan call(s) as one '
            f'op but the model has {expected} SS2D module(s), so the scan was traced into other operators (or '
            'dropped) and the file would compute something else. Export through vmamba.deploy (the scan ops must '
            'be the torch.ops.vmamba custom ops, called under torch.no_grad()).')
    lowered = onnx_scan.lower_scans(proto, inline=inline)
    others = _non_standard_nodes(proto)
    if others:
        raise ExportError(f'Refusing to write {name}: the graph still has non-standard ops '
                          f'{", ".join(f"{d}::{o}" for d, o in others)}.')
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as err:
        raise ExportError(f'Refusing to write {name}: the exported graph is invalid ONNX ({str(err).splitlines()[0]})')
    onnx.save(proto, path)
    return dict(path=path, exporter=exporter, seconds=time.perf_counter() - start, trace_seconds=traced,
                scans=lowered, nodes=len(proto.graph.node), nodes_all=_count_all_nodes(proto),
                opset=onnx_scan._default_opset(proto), dynamic=dynamic, example=(batch, *shape),
                size_bytes=osp.getsize(path))


def min_side():
    """Smallest H, W a dynamic dynamo export takes (that of :mod:`vmamba.deploy.torch_export`)."""
    from .torch_export import MIN_SIDE
    return MIN_SIDE


def _count_all_nodes(model):
    """Nodes including those inside subgraphs (Scan bodies) and local functions."""
    def count(nodes):
        n = 0
        for node in nodes:
            n += 1
            for a in node.attribute:
                if a.g is not None and a.g.node:
                    n += count(a.g.node)
                for g in a.graphs:
                    n += count(g.node)
        return n
    return count(model.graph.node) + sum(count(f.node) for f in model.functions)


def _export_dynamo(model, x, outputs, dynamic, opset, lower):
    """torch.export (with the dynamic batch and H, W of :func:`vmamba.deploy.torch_export.export_model`), then
    ``torch.onnx.export`` of the program with the scan ops translated to placeholders."""
    from .torch_export import export_model
    table = _dynamo_translations() if lower else None
    try:
        program = export_model(model, x, dynamic_batch=dynamic, dynamic_hw=dynamic)
    except Exception as err:
        raise ExportError(f'Refusing to export: torch.export failed ({_first_line(err)}).') from err
    try:
        onnx_program = torch.onnx.export(program, (x,), None, dynamo=True, opset_version=opset, input_names=['x'],
                                         output_names=outputs, custom_translation_table=table, optimize=True,
                                         verbose=False)
    except Exception as err:  # the exporter wraps everything in its own error types
        raise ExportError(f'Refusing to export: torch.onnx.export (dynamo) failed ({_first_line(err)}).') from err
    return onnx_program.model_proto


def _export_torchscript(model, x, outputs, dynamic, opset, lower):
    import onnx
    if lower:
        _torchscript_symbolics(opset)
    else:
        for op in ('vmamba::ss2d_scan', 'vmamba::selective_scan'):
            torch.onnx.unregister_custom_op_symbolic(op, opset)
    axes = None
    if dynamic:
        axes = {'x': {0: 'batch', 2: 'height', 3: 'width'}}
        axes.update({name: {0: 'batch'} for name in outputs})
        if outputs != ['logits']:
            axes.update({name: {0: 'batch', 2: f'{name}_h', 3: f'{name}_w'} for name in outputs})
    with tempfile.TemporaryDirectory() as tmp:
        f = osp.join(tmp, 'model.onnx')
        try:
            # Without the lowering, unknown ops fall through as custom nodes, so that the check in export_onnx
            # (not torch's 100-line graph dump) says what is wrong.
            fallthrough = torch.onnx.OperatorExportTypes.ONNX_FALLTHROUGH
            torch.onnx.export(model, (x,), f, dynamo=False, opset_version=opset, input_names=['x'],
                              output_names=outputs, dynamic_axes=axes, do_constant_folding=True,
                              custom_opsets={onnx_scan.PLACEHOLDER_DOMAIN: 1} if lower else None,
                              **({} if lower else {'operator_export_type': fallthrough}))
        except Exception as err:
            raise ExportError(f'Refusing to export: the TorchScript exporter failed ({_first_line(err)}).') from err
        return onnx.load(f)


def _first_line(err):
    text = re.sub(r'\x1b\[[0-9;]*m', '', str(err)).strip()
    return f'{type(err).__name__}: {text.splitlines()[0] if text else ""}'


# ----------------------------------------------------------------------------------------------------- verify
@dataclasses.dataclass
class Check:
    """One verification run: onnxruntime against eager PyTorch on the same input."""
    batch: int
    shape: tuple
    max_abs: float
    max_rel: float
    ort_img_s: float
    eager_img_s: float
    scale: float = 1.0  # largest |eager output|

    def within(self, atol):
        """``max_abs <= atol`` for outputs of magnitude up to 1 (logits), relative to the magnitude above it
        (feature maps of a backbone): ``max_abs <= atol * max(1, scale)``."""
        return self.max_abs <= atol * max(1.0, self.scale)

    def line(self):
        return (f'batch {self.batch} {self.shape[0]}x{self.shape[1]}: max abs err {self.max_abs:.2e}, '
                f'max rel err {self.max_rel:.2e}; onnxruntime {self.ort_img_s:.2f} img/s, '
                f'eager PyTorch {self.eager_img_s:.2f} img/s')


def _timed(fn, runs):
    out = fn()  # warm-up (and the result)
    start = time.perf_counter()
    for _ in range(runs):
        fn()
    return out, (time.perf_counter() - start) / max(runs, 1)


def verify_onnx(path, model, cases, runs=1, threads=None):
    """Run ``path`` with onnxruntime (CPUExecutionProvider) and ``model`` eagerly on the same random inputs.

    ``cases``: (batch, (H, W)) pairs, all against the one file. Returns a :class:`Check` per case. The relative
    error is the max abs error over the largest magnitude of the eager output (per output, max over outputs).
    """
    _, ort = require_onnx()
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    names = [o.name for o in session.get_outputs()]
    checks = []
    for i, (batch, shape) in enumerate(cases):
        x = example_input(model, batch, shape, seed=1 + i)
        with torch.no_grad():
            eager, t_eager = _timed(lambda: model(x), runs)
        feed = {session.get_inputs()[0].name: x.numpy()}
        got, t_ort = _timed(lambda: session.run(names, feed), runs)
        eager = [eager] if isinstance(eager, torch.Tensor) else list(eager)
        max_abs = max_rel = scale = 0.0
        for ref, out in zip(eager, got):
            ref = ref.float().numpy()
            if out.shape != ref.shape:
                raise ExportError(f'{path}: output shape {out.shape} != eager {ref.shape} at batch {batch} '
                                  f'{shape[0]}x{shape[1]}')
            err = float(abs(out - ref).max())
            max_abs = max(max_abs, err)
            size = float(abs(ref).max())
            max_rel = max(max_rel, err / max(size, 1e-12))
            scale = max(scale, size)
        checks.append(Check(batch, tuple(shape), max_abs, max_rel, batch / t_ort, batch / t_eager, scale))
    return checks


def export_and_verify(model, path, shape=(224, 224), batch=1, cases=None, atol=1e-4, keep_failed=False,
                      log=print, runs=1, **export_kwargs):
    """Export to ``path`` and verify; the file is kept only if every case is within ``atol`` (max abs error, for
    outputs of magnitude up to 1; relative to the output's magnitude above that: :meth:`Check.within`).

    The file is written next to ``path`` first and renamed into place after the verification, so a failed
    export leaves no ``path`` behind (with ``keep_failed``, the rejected file stays as ``<path>.rejected.onnx``).
    ``cases`` defaults to ``(batch, shape)`` and, for a dynamic export, ``(batch + 1, (H + 32, W + 64))``.
    Returns ``(export facts, checks)``; raises :class:`ExportError` on a failed check.
    """
    require_onnx()
    dynamic = export_kwargs.get('dynamic', True)
    if cases is None:
        cases = [(batch, tuple(shape))]
        if dynamic:
            cases.append((batch + 1, (shape[0] + SIZE_MULTIPLE, shape[1] + 2 * SIZE_MULTIPLE)))
    if not dynamic:
        wrong = [c for c in cases if c != (batch, tuple(shape))]
        if wrong:
            raise ExportError(f'A --static export only takes batch {batch} at {shape[0]}x{shape[1]}; verify cases '
                              f'{wrong} need a dynamic export.')
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix='.onnx', prefix='.export-', dir=directory)
    os.close(fd)
    try:
        facts = export_onnx(model, tmp, shape=shape, batch=batch, name=path, **export_kwargs)
        facts['path'] = path
        log(f'exported in {facts["seconds"]:.1f} s ({facts["exporter"]} exporter, opset {facts["opset"]}): '
            f'{facts["nodes"]} nodes ({facts["nodes_all"]} with the Scan bodies), {facts["scans"]} lowered scans, '
            f'{facts["size_bytes"] / 2**20:.1f} MiB')
        checks = verify_onnx(tmp, model, cases, runs=runs)
        for c in checks:
            log(c.line())
        bad = [c for c in checks if not c.within(atol)]
        if bad:
            kept = ''
            if keep_failed:
                os.replace(tmp, path + '.rejected.onnx')
                kept = f' (kept as {path}.rejected.onnx)'
            worst = max(bad, key=lambda c: c.max_abs / max(1.0, c.scale))
            raise ExportError(f'onnxruntime differs from eager PyTorch by more than --atol {atol:g} (x max(1, '
                              f'output scale {worst.scale:.3g})) at {worst.line()}; {path} was not written{kept}.')
        os.replace(tmp, path)
        return facts, checks
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
