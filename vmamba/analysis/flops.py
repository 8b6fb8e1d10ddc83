"""Parameters and FLOPs with the official VMamba counting convention.

The counter is mmengine's :class:`~mmengine.analysis.FlopAnalyzer` (a port of fvcore's jit tracer, the tool
the official repository uses), so every layer is counted as fvcore counts it: one multiply-add is one FLOP
(MACs), convolutions and linear layers without their bias, LayerNorm as 5 per element, element-wise
activations as nothing. What fvcore cannot see is the selective scan; the official repo hooks its CUDA op
(``prim::PythonOp.SelectiveScanCuda``) with

    9 * B * L * D * N + B * D * L       (mamba issue #110; VMamba ``csms6s.py``)

for a scan of D channels with state size N over L positions (the second term is the ``D * u`` skip), and
explicitly ignores ``aten::silu/gelu/neg/exp/flip``. The cross-scan and cross-merge are a gather and a
scatter-add, counted as zero.

How we match it independently of how the op is implemented: while counting, the model's one call into the
op, ``vmamba.models.ss2d.ss2d_selective_scan``, is replaced by :class:`SS2DScanProbe`, an autograd Function
that returns a stand-in of the right shape without running the scan. A jit trace records it as the single
node ``prim::PythonOp.SS2DScanProbe``, whose handle charges the official formula with D = 4 * Di (the four
routes are four scans' worth). Whether the real op is a Triton kernel, a chain of torch ops or a Python loop
never matters, and counting a 1280x800 detector on CPU does not wait for a real scan.
"""
import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.analysis.jit_handles import get_shape

import vmamba.models.ss2d as ss2d_module
from vmamba.ops import flops_selective_scan

__all__ = ['SS2DScanProbe', 'scan_flop_handle', 'official_scan_counting', 'OFFICIAL_OP_HANDLES',
           'Complexity', 'count_complexity']


class SS2DScanProbe(torch.autograd.Function):
    """Stands in for ``ss2d_selective_scan`` while counting: same signature, same output shape and dtype.

    Its output is ``x`` in float32 (what a scan with D = 1 and a negligible state would return), so what
    follows the scan sees activations of the usual size and sign; no value of the model is meaningful
    while counting. Only the jit node matters: its name is what :data:`OFFICIAL_OP_HANDLES` hooks.
    """

    @staticmethod
    def forward(ctx, x, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True):
        return x.to(torch.float32, copy=True)

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - counting never differentiates
        raise RuntimeError('SS2DScanProbe only stands in for the scan while counting FLOPs.')


def _probe(x, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True, backend=None):
    return SS2DScanProbe.apply(x, delta, A, B, C, D, delta_bias, delta_softplus)


def scan_flop_handle(inputs, outputs):
    """FLOPs of one probe node: the official formula for the 4 routes of x (batch, H, W, Di), A (4*Di, N)."""
    batch, height, width, _ = get_shape(inputs[0])
    channels, d_state = get_shape(inputs[2])
    return flops_selective_scan(batch, channels, height * width, d_state, with_D=True)


#: The official ``supported_ops`` (VMamba ``analyze/utils.py``): the scan by its formula; element-wise ops
#: that fvcore would otherwise report as unsupported are declared as counted-as-zero.
OFFICIAL_OP_HANDLES = {
    'prim::PythonOp.SS2DScanProbe': scan_flop_handle,
    'aten::gelu': None,
    'aten::silu': None,
    'aten::neg': None,
    'aten::exp': None,
    'aten::flip': None,
}


@contextlib.contextmanager
def official_scan_counting():
    """Within this block, every SS2D calls :class:`SS2DScanProbe` instead of the real scan."""
    original = ss2d_module.ss2d_selective_scan
    ss2d_module.ss2d_selective_scan = _probe
    try:
        yield
    finally:
        ss2d_module.ss2d_selective_scan = original


@dataclass
class Complexity:
    """The result of :func:`count_complexity`.

    ``flops`` are multiply-accumulates as fvcore counts them (the unit of every published VMamba,
    Swin and ConvNeXt number); ``by_module`` maps module names to their FLOPs; ``uncounted`` lists the
    traced ops that have no handle (counted as zero) with how often they occur.
    """
    flops: int
    params: int
    by_module: dict = field(default_factory=dict, repr=False)
    uncounted: dict = field(default_factory=dict, repr=False)

    @property
    def gflops(self):
        return self.flops / 1e9

    @property
    def mparams(self):
        return self.params / 1e6


def count_complexity(model: nn.Module, inputs, params_of: nn.Module = None) -> Complexity:
    """Count FLOPs of ``model(*inputs)`` (one jit trace) and the parameters of ``params_of`` (default: model).

    ``inputs`` is a tensor or a tuple of positional arguments. The model is put in eval mode (BatchNorm
    and drop-path as at inference) and restored afterwards.
    """
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    was_training = model.training
    model.eval()
    try:
        with official_scan_counting(), torch.no_grad():
            analyzer = FlopAnalyzer(model, inputs).set_op_handle(**OFFICIAL_OP_HANDLES)
            analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings('none')
            flops = analyzer.total()
            by_module = dict(analyzer.by_module())
            uncounted = dict(analyzer.unsupported_ops())
    finally:
        model.train(was_training)
    params = parameter_count(params_of if params_of is not None else model)['']
    return Complexity(flops=int(flops), params=int(params), by_module=by_module, uncounted=uncounted)
