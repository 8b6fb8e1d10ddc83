"""The selective-scan ops lowered to standard ONNX operators, as ONNX model-local functions.

The exporters (:mod:`vmamba.deploy.export`) turn each ``torch.ops.vmamba.ss2d_scan`` / ``selective_scan`` call
into one placeholder node of the custom domain :data:`PLACEHOLDER_DOMAIN`. :func:`lower_scans` then replaces every
placeholder by a call of a function built here (domain :data:`FUNCTION_DOMAIN`) out of standard operators only, so
any ONNX runtime runs the file, and (optionally) inlines the calls.

The lowering is the chunked scan of :mod:`vmamba.ops.torch_scan`, written with two ONNX ``Scan`` loops, so that
the number of nodes is fixed whatever the batch, H and W (all sizes are read with ``Shape`` at run time)::

    L = H*W positions of each route, T = ceil(sqrt(L)) positions a chunk, nc = ceil(L / T) chunks;
    operands zero-padded to nc*T positions (Δ = 0 is an identity step) and laid out (T, batch, nc, K, ...);

    Scan 1 over the T positions of a chunk, all chunks at once (state: h, from zero in every chunk):
        h = exp(Δ_t A) h + Δ_t u_t B_t;  y_t = <h, C_t>
    Scan 2 over the nc chunks (state: H, the state entering the chunk):
        in_c = H;  H = exp(A sum_{t in c} Δ_t) H + h_end(c)
    fix-up: y_t += <exp(A cumsum_{s<=t in c} Δ_s) * in_c, C_t>

That is ~2 sqrt(L) loop iterations on whole-tensor operations instead of L, and nothing is ever exponentiated
from a positive exponent (A < 0, Δ >= 0), so nothing overflows where the sequential recurrence does not.

SS2D routes: route 0 reads the (H, W) map row-major, route 1 column-major (a ``Transpose`` of H and W), routes
2 and 3 are routes 0 and 1 reversed (a ``Slice`` with step -1). All four are scanned as one K = 4 scan and put
back in place with the same operations; the D skip is ``x * sum_k D_k`` (every route sees x at its position).
The math runs in float32 (inputs are cast), as the PyTorch op.
"""
import itertools

import onnx
from onnx import TensorProto, helper

__all__ = ['PLACEHOLDER_DOMAIN', 'FUNCTION_DOMAIN', 'SS2D_OP', 'PLAIN_OP', 'MIN_OPSET', 'lower_scans',
           'count_scan_nodes', 'ss2d_function', 'selective_scan_function']

#: Domain of the placeholder nodes the exporters emit (never left in a written file).
PLACEHOLDER_DOMAIN = 'vmamba.placeholder'
#: Domain of the functions that implement the ops with standard operators.
FUNCTION_DOMAIN = 'vmamba.onnx'
SS2D_OP, PLAIN_OP = 'SS2DScan', 'SelectiveScan'
#: Oldest default-domain opset the functions are written for (Shape with start/end, ReduceSum axes input).
MIN_OPSET = 15

_INT64_MIN = -(2 ** 63)
_FLOAT = TensorProto.FLOAT


class _Builder:
    """Collects nodes with unique output names; ``op('Add', a, b)`` returns the output name."""

    def __init__(self, prefix):
        self.prefix = prefix
        self.nodes = []
        self._ids = itertools.count()

    def name(self, hint):
        return f'{self.prefix}{hint}_{next(self._ids)}'

    def op(self, op_type, *inputs, outputs=1, hint=None, **attrs):
        names = [self.name(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=self.name(op_type), **attrs))
        return names[0] if outputs == 1 else names

    def const(self, values, dtype=TensorProto.INT64, hint='c'):
        dims = [] if not isinstance(values, (list, tuple)) else [len(values)]
        vals = list(values) if isinstance(values, (list, tuple)) else [values]
        return self.op('Constant', hint=hint, value=helper.make_tensor(self.name(hint), dtype, dims, vals))

    # -- small helpers ---------------------------------------------------------------------------------------
    def dim(self, shape, i):
        """Dimension ``i`` of a shape tensor, as a 1-element int64 tensor."""
        return self.op('Slice', shape, self.const([i]), self.const([i + 1]), self.const([0]), hint='dim')

    def unsqueeze(self, x, *axes):
        return self.op('Unsqueeze', x, self.const(list(axes)))

    def slice(self, x, axis, start, end):
        return self.op('Slice', x, self.const([start]), self.const([end]), self.const([axis]))

    def flip(self, x, axis):
        """Reverse ``x`` along ``axis`` (any length)."""
        return self.op('Slice', x, self.const([-1]), self.const([_INT64_MIN]), self.const([axis]),
                       self.const([-1]), hint='flip')

    def concat(self, *xs, axis):
        return self.op('Concat', *xs, axis=axis)

    def reshape(self, x, *parts):
        return self.op('Reshape', x, self.concat(*parts, axis=0))


def _vi(name, rank, elem_type=_FLOAT):
    """A float tensor of known rank and unknown sizes."""
    return helper.make_tensor_value_info(name, elem_type, [None] * rank)


def _chunked_scan(b, dt, du, Bt, Ct, A, K, F_D):
    """The scan on packed route-major operands; returns y (batch, L, K, Dg) float32 (no D skip).

    dt, du: (batch, L, K, Dg) (Δ after bias/softplus, and Δ*u); Bt, Ct: (batch, L, K, N); A: (K*Dg, N).
    ``K`` and ``F_D`` are 1-element int64 tensors (K, and Dg).

    States are laid out (..., N, Dg), channels innermost: every broadcast then repeats whole rows of channels or
    one value per row, the two cases onnxruntime's elementwise kernels run at full speed.
    """
    shape = b.op('Shape', dt)
    batch, length = b.dim(shape, 0), b.dim(shape, 1)
    N = b.dim(b.op('Shape', A), 1)
    A3 = b.op('Transpose', b.reshape(A, K, F_D, N), perm=[0, 2, 1])  # (K, N, Dg)

    # Chunk length T = ceil(sqrt(L)), nc = ceil(L / T) chunks, padded length nc * T.
    Lf = b.op('Cast', length, to=_FLOAT)
    T = b.op('Cast', b.op('Ceil', b.op('Sqrt', Lf)), to=TensorProto.INT64)
    one, zero = b.const([1]), b.const([0])
    nc = b.op('Div', b.op('Sub', b.op('Add', length, T), one), T)
    pad = b.op('Sub', b.op('Mul', nc, T), length)
    pads = b.concat(zero, zero, zero, zero, zero, pad, zero, zero, axis=0)

    def to_chunks(t):  # (batch, L, K, F) -> (T, nc, batch, K, F), zero padded at the end
        t = b.op('Pad', t, pads)
        t = b.op('Reshape', t, b.concat(batch, nc, T, b.const([-1]), b.dim(b.op('Shape', t), 3), axis=0))
        return b.op('Transpose', t, perm=[2, 1, 0, 3, 4])

    dt_c, du_c, B_c, C_c = (to_chunks(t) for t in (dt, du, Bt, Ct))

    # Scan 1, over the T positions of a chunk, all chunks at once: states h from zero, y_t = <h_t, C_t>, and the
    # products P_t of the decays since the chunk start (as the PyTorch backend: decays are only ever multiplied).
    s = _Builder(b.prefix + 'in_')
    h_in, p_in, dt_t, du_t, B_t, C_t = 'h_in', 'p_in', 'dt_t', 'du_t', 'B_t', 'C_t'
    decay = s.op('Exp', s.op('Mul', s.unsqueeze(dt_t, -2), A3))  # (nc, batch, K, N, Dg)
    h_out = s.op('Add', s.op('Mul', decay, h_in), s.op('Mul', s.unsqueeze(du_t, -2), s.unsqueeze(B_t, -1)))
    p_out = s.op('Mul', decay, p_in)
    y_t = s.op('ReduceSum', s.op('Mul', h_out, s.unsqueeze(C_t, -1)), s.const([-2]), keepdims=0)
    p_t = s.op('Identity', p_out, hint='p_t')
    body1 = helper.make_graph(s.nodes, b.name('chunk_body'),
                              [_vi(h_in, 5), _vi(p_in, 5)] + [_vi(n, 4) for n in (dt_t, du_t, B_t, C_t)],
                              [_vi(h_out, 5), _vi(p_out, 5), _vi(y_t, 4), _vi(p_t, 5)])
    state = b.concat(nc, batch, K, N, F_D, axis=0)
    h0 = b.op('ConstantOfShape', state, value=helper.make_tensor(b.name('zero'), _FLOAT, [1], [0.0]))
    p0 = b.op('ConstantOfShape', state, value=helper.make_tensor(b.name('one'), _FLOAT, [1], [1.0]))
    h_end, decay_chunk, y_local, decay_to = b.op('Scan', h0, p0, dt_c, du_c, B_c, C_c, outputs=4, body=body1,
                                                 num_scan_inputs=4)
    # decay_to: (T, nc, batch, K, N, Dg), the decay from the chunk start through t; decay_chunk: over the chunk.

    # Scan 2, over the chunks: the state entering each chunk.
    s2 = _Builder(b.prefix + 'carry_')
    H_in, p_c, e_c = 'H_in', 'p_c', 'e_c'
    incoming_c = s2.op('Identity', H_in, hint='incoming')
    H_out = s2.op('Add', s2.op('Mul', p_c, H_in), e_c)
    body2 = helper.make_graph(s2.nodes, b.name('carry_body'), [_vi(n, 4) for n in (H_in, p_c, e_c)],
                              [_vi(H_out, 4), _vi(incoming_c, 4)])
    H0 = b.op('ConstantOfShape', b.concat(batch, K, N, F_D, axis=0),
              value=helper.make_tensor(b.name('zero'), _FLOAT, [1], [0.0]))
    _, incoming = b.op('Scan', H0, decay_chunk, h_end, outputs=2, body=body2, num_scan_inputs=2)

    # y_t += <decay_to_t * incoming, C_t>
    fix = b.op('Mul', b.op('Mul', decay_to, b.unsqueeze(incoming, 0)), b.unsqueeze(C_c, -1))
    y = b.op('Add', y_local, b.op('ReduceSum', fix, b.const([-2]), keepdims=0))  # (T, nc, batch, K, Dg)

    y = b.op('Transpose', y, perm=[2, 1, 0, 3, 4])  # (batch, nc, T, K, Dg)
    y = b.reshape(y, batch, b.const([-1]), K, F_D)
    return b.op('Slice', y, zero, length, one)  # drop the padding


def _delta(b, delta, delta_bias, bias_shape, softplus):
    """Δ = softplus(delta + bias) (identity above 20, as torch), or delta + bias."""
    if delta_bias is not None:
        delta = b.op('Add', delta, b.op('Reshape', delta_bias, bias_shape))
    if softplus:
        # max(z, 0) + log(1 + exp(-|z|)): overflow-free, and above 20 the log term is below half an ulp of z, i.e.
        # the identity there as torch's threshold. (onnxruntime's own Softplus is much slower than these ops.)
        tail = b.op('Log', b.op('Add', b.op('Exp', b.op('Neg', b.op('Abs', delta))), b.const(1.0, _FLOAT)))
        delta = b.op('Add', b.op('Relu', delta), tail)
    return delta


def _function(name, inputs, outputs, nodes, opset):
    return helper.make_function(FUNCTION_DOMAIN, name, inputs, outputs, nodes,
                                [helper.make_opsetid('', opset)])


def ss2d_function(softplus=True, has_D=True, has_bias=True, opset=18):
    """FunctionProto of ``ss2d_scan``: inputs x, delta, A, B, C[, D][, delta_bias] -> y (batch, H, W, Dm) fp32.

    Shapes as :func:`vmamba.ops.ss2d_selective_scan`: x (batch, H, W, Dm), delta (batch, H, W, 4, Dm), A (4*Dm, N),
    B, C (batch, H, W, 4, N), D, delta_bias (4*Dm,).
    """
    b = _Builder('')
    x, delta, B, C = (b.op('Cast', n, to=_FLOAT, hint=n) for n in ('x', 'delta', 'B', 'C'))
    sx = b.op('Shape', x)
    batch, H, W, Dm = (b.dim(sx, i) for i in range(4))
    four, minus1 = b.const([4]), b.const([-1])
    delta = _delta(b, delta, 'delta_bias' if has_bias else None, b.concat(four, minus1, axis=0), softplus)

    # Pack what the scan reads at each position (Δ, Δ*u, B, C: the same whatever the route) and route it once.
    du = b.op('Mul', delta, b.unsqueeze(x, 3))
    packed = b.concat(delta, du, B, C, axis=-1)  # (batch, H, W, 4, F), F = 2 Dm + 2 N
    F = b.dim(b.op('Shape', packed), 4)
    seq = (batch, minus1, four, F)
    rows = b.reshape(packed, *seq)  # (batch, L, 4, F), row-major positions
    cols = b.reshape(b.op('Transpose', packed, perm=[0, 2, 1, 3, 4]), *seq)  # column-major
    forward = b.concat(b.slice(rows, 2, 0, 1), b.slice(cols, 2, 1, 2), axis=2)
    backward = b.flip(b.concat(b.slice(rows, 2, 2, 3), b.slice(cols, 2, 3, 4), axis=2), 1)
    routed = b.concat(forward, backward, axis=2)  # (batch, L, 4, F), route k in route k's order
    N = b.dim(b.op('Shape', 'A'), 1)
    dt, du, Bt, Ct = b.op('Split', routed, b.concat(Dm, Dm, N, N, axis=0), outputs=4, axis=-1)

    y = _chunked_scan(b, dt, du, Bt, Ct, 'A', four, Dm)  # (batch, L, 4, Dm), route order
    merged = b.op('Add', b.slice(y, 2, 0, 2), b.flip(b.slice(y, 2, 2, 4), 1))  # (batch, L, 2, Dm)
    rows = b.reshape(b.slice(merged, 2, 0, 1), batch, H, W, Dm)
    cols = b.op('Transpose', b.reshape(b.slice(merged, 2, 1, 2), batch, W, H, Dm), perm=[0, 2, 1, 3])
    out = b.op('Add', rows, cols)
    if has_D:
        d_sum = b.op('ReduceSum', b.op('Reshape', 'D', b.concat(four, minus1, axis=0)), b.const([0]), keepdims=0)
        out = b.op('Add', out, b.op('Mul', x, d_sum))
    b.nodes.append(helper.make_node('Identity', [out], ['y'], name=b.name('Identity')))
    inputs = ['x', 'delta', 'A', 'B', 'C'] + (['D'] if has_D else []) + (['delta_bias'] if has_bias else [])
    return _function(_variant(SS2D_OP, softplus, has_D, has_bias), inputs, ['y'], b.nodes, opset)


def selective_scan_function(softplus=False, has_D=True, has_bias=True, out_float=True, opset=18):
    """FunctionProto of the plain ``selective_scan``: u, delta (batch, K*Dg, L), A (K*Dg, N), B, C (batch, K, N, L),
    D, delta_bias (K*Dg,) -> y (batch, K*Dg, L): float32, or u's dtype when ``out_float`` is false."""
    b = _Builder('')
    u, delta, B, C = (b.op('Cast', n, to=_FLOAT, hint=n) for n in ('u', 'delta', 'B', 'C'))
    su, sB = b.op('Shape', u), b.op('Shape', B)
    batch, channels, length = (b.dim(su, i) for i in range(3))
    K = b.dim(sB, 1)
    minus1 = b.const([-1])
    Dg = b.op('Div', channels, K)
    delta = _delta(b, delta, 'delta_bias' if has_bias else None, b.concat(channels, b.const([1]), axis=0),
                   softplus)

    def channels_last(t):  # (batch, K*Dg, L) -> (batch, L, K, Dg)
        return b.op('Transpose', b.reshape(t, batch, K, Dg, length), perm=[0, 3, 1, 2])

    dt = channels_last(delta)
    du = channels_last(b.op('Mul', delta, u))
    Bt, Ct = (b.op('Transpose', t, perm=[0, 3, 1, 2]) for t in (B, C))  # (batch, L, K, N)
    y = _chunked_scan(b, dt, du, Bt, Ct, 'A', K, Dg)  # (batch, L, K, Dg)
    y = b.reshape(b.op('Transpose', y, perm=[0, 2, 3, 1]), batch, minus1, length)
    if has_D:
        y = b.op('Add', y, b.op('Mul', u, b.unsqueeze('D', -1)))
    if not out_float:
        y = b.op('CastLike', y, 'u')
    b.nodes.append(helper.make_node('Identity', [y], ['y'], name=b.name('Identity')))
    inputs = ['u', 'delta', 'A', 'B', 'C'] + (['D'] if has_D else []) + (['delta_bias'] if has_bias else [])
    name = _variant(PLAIN_OP, softplus, has_D, has_bias) + ('' if out_float else '_InDtype')
    return _function(name, inputs, ['y'], b.nodes, opset)


def _variant(op, softplus, has_D, has_bias):
    return (f'{op}{"_Softplus" if softplus else ""}{"" if has_D else "_NoD"}'
            f'{"" if has_bias else "_NoBias"}')


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _default_opset(model):
    return next((o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')), None)


def count_scan_nodes(model):
    """``(placeholders, lowered)``: nodes of the placeholder domain, and calls of the scan functions."""
    nodes = list(model.graph.node)
    return (sum(n.domain == PLACEHOLDER_DOMAIN for n in nodes),
            sum(n.domain == FUNCTION_DOMAIN and n.op_type.startswith((SS2D_OP, PLAIN_OP)) for n in nodes))


def lower_scans(model, inline=True):
    """Replace the placeholder nodes of ``model`` (in place) by calls of the scan functions; return the number.

    With ``inline`` the calls are expanded into the graph (plain nodes plus the two ``Scan`` loops a call;
    every runtime reads that), otherwise they stay model-local functions (one node a call; onnxruntime inlines
    them when it loads the file).
    """
    opset = _default_opset(model)
    if opset is None or opset < MIN_OPSET:
        raise ValueError(f'the scan lowering needs default-domain opset >= {MIN_OPSET}, the model has {opset}')
    functions = {f.name: f for f in model.functions if f.domain == FUNCTION_DOMAIN}
    count = 0
    for node in model.graph.node:
        if node.domain != PLACEHOLDER_DOMAIN:
            continue
        # The exporters pass the inputs that are there and say which with has_D / has_bias; a node without those
        # attributes marks an absent optional input with an empty name.
        present = [bool(n) for n in node.input] + [False] * (7 - len(node.input))
        has_D, has_bias = bool(_attr(node, 'has_D', present[5])), bool(_attr(node, 'has_bias', present[6]))
        softplus = bool(_attr(node, 'delta_softplus', 1))
        if node.op_type == SS2D_OP:
            fn = ss2d_function(softplus, has_D, has_bias, opset)
        elif node.op_type == PLAIN_OP:
            fn = selective_scan_function(softplus, has_D, has_bias, bool(_attr(node, 'out_float', 1)), opset)
        else:
            raise ValueError(f'unknown placeholder op {node.domain}::{node.op_type}')
        functions.setdefault(fn.name, fn)
        inputs = [n for n in node.input if n]
        del node.input[:]
        node.input.extend(inputs)
        del node.attribute[:]
        node.domain, node.op_type = FUNCTION_DOMAIN, fn.name
        count += 1
    kept = [f for f in model.functions if f.domain != FUNCTION_DOMAIN]
    del model.functions[:]
    model.functions.extend(kept + list(functions.values()))
    imports = [o for o in model.opset_import if o.domain != PLACEHOLDER_DOMAIN]
    if not any(o.domain == FUNCTION_DOMAIN for o in imports):
        imports.append(helper.make_opsetid(FUNCTION_DOMAIN, 1))
    del model.opset_import[:]
    model.opset_import.extend(imports)
    if inline and count:
        import onnx.inliner
        inlined = onnx.inliner.inline_selected_functions(
            model, [(FUNCTION_DOMAIN, f.name) for f in functions.values()], exclude=False)
        model.CopyFrom(inlined)
    return count


def standalone_model(kind='ss2d', opset=18, softplus=True, has_D=True, has_bias=True, inline=False):
    """A one-node ModelProto calling the lowered op with fully dynamic inputs (for tests and inspection)."""
    if kind == 'ss2d':
        fn = ss2d_function(softplus, has_D, has_bias, opset)
    else:
        fn = selective_scan_function(softplus, has_D, has_bias, True, opset)
    ranks = dict(x=4, delta=5, A=2, B=5, C=5, D=1, delta_bias=1) if kind == 'ss2d' else \
        dict(u=3, delta=3, A=2, B=4, C=4, D=1, delta_bias=1)
    inputs = [_vi(n, ranks[n]) for n in fn.input]
    node = helper.make_node(fn.name, list(fn.input), ['y'], domain=FUNCTION_DOMAIN)
    graph = helper.make_graph([node], 'scan', inputs, [_vi('y', 4 if kind == 'ss2d' else 3)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', opset),
                                                    helper.make_opsetid(FUNCTION_DOMAIN, 1)],
                              functions=[fn])
    if inline:
        import onnx.inliner
        model = onnx.inliner.inline_local_functions(model)
    return model
