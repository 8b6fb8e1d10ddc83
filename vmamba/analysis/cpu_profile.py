"""Where a model's CPU time goes: a torch.profiler run, its op self-times summed by *kind* of work.

Kinds are what one would optimise separately: the scan op, each projection, the depthwise conv, norms, the MLP,
layout copies, downsampling, ... (VMamba); attention, window shifting, ... (Swin). An op is attributed by

1. the innermost module it runs in: every module's forward is wrapped in a ``record_function`` range named after
   its qualified name (forward hooks, added for the profiled steps only), and a table of name patterns
   (:data:`RULES`) maps that name, or the module's class, to a kind;
2. for ops a module issues in its own ``forward`` (not in a sub-module), the op itself: ``vmamba::`` ops are the
   scan; in SS2D the matrix products are told apart by the parameter shapes among their inputs (x_proj vs
   dt_proj vs in_proj); copies (``copy_``, ``cat``, ``pad``, ``roll``, ``contiguous``, ...) are layout work.

Backward ops are attributed to the kind of the forward op that recorded their autograd node (the profiler's
sequence numbers), so forward and backward columns line up; gradient accumulation into ``.grad`` is its own row.
Self-times are summed (exclusive time), so the rows add up to a profiled step; what no op covers
(Python between ops, the hooks) is the ``python / dispatch`` row.

Times are ms per image, best-of: each kind's (and op's) time in the fastest of the profiled steps, so that steps
slowed down by other processes on a shared machine count least. Used by ``tools/analysis/profile_cpu.py`` (and
:class:`LiveTensorPeak` by ``tools/analysis/det_memory.py``).
"""
import re
import time
import weakref
from collections import defaultdict
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

__all__ = ['Breakdown', 'profile_subject', 'format_breakdowns', 'format_top_ops', 'KIND_ORDER', 'LiveTensorPeak']

_MODULE = 'module::'
_BACKWARD = 'autograd::engine::evaluate_function: '
_STEP = 'profiled step '

#: Regions, checked on every enclosing module (outermost first): all the work inside them is one kind.
REGIONS = [(r'(^|\.)patch_embed$', 'stem'), (r'(^|\.)downsample$', 'downsampling'),
           (r'^(classifier|neck|head)$|^backbone\.norm\d$|(^|\.)outnorm\d$', 'head')]

#: (pattern on the qualified module name, kind), checked from the innermost enclosing module out; the first match
#: wins, then LayerNorm anywhere is 'norms'. Names are those of VSSM / VMamba (``layers.2.blocks.3.op.in_proj``)
#: and of mmpretrain's Swin (``backbone.stages.0.blocks.1.attn.w_msa.qkv``).
RULES = [
    (r'\.op\.in_proj$', 'in_proj'),
    (r'\.op\.conv2d$', 'depthwise conv'),
    (r'\.op\.act$', 'SiLU'),
    (r'\.op\.out_proj$', 'out_proj'),
    (r'\.attn\.w_msa\.(qkv|proj)$', 'attention qkv/proj'),
    (r'\.attn\.w_msa$', 'attention core'),
    (r'\.attn$', 'window shift/partition'),
    (r'\.(mlp|ffn)$', 'MLP'),
    (r'\.(drop_path|drop|dropout_layer)$', 'residual / drop path'),
]

#: Row order of the printed table (kinds not listed come after, in order of time).
KIND_ORDER = ['stem', 'norms', 'in_proj', 'depthwise conv', 'SiLU', 'x_proj', 'dt_proj', 'scan op', 'scan params',
              'out_proj', 'gate', 'attention qkv/proj', 'attention core', 'window shift/partition', 'MLP',
              'layout copies', 'residual / drop path', 'downsampling', 'head', 'loss', 'grad accumulation',
              'python / dispatch', 'other']

_COPIES = {'aten::copy_', 'aten::contiguous', 'aten::clone', 'aten::cat', 'aten::stack', 'aten::constant_pad_nd',
           'aten::pad', 'aten::roll', 'aten::_to_copy', 'aten::to', 'aten::reshape', 'aten::flatten',
           'aten::index', 'aten::im2col'}
_MATMULS = {'aten::linear', 'aten::matmul', 'aten::mm', 'aten::bmm', 'aten::addmm', 'aten::baddbmm',
            'aten::einsum'}


def _match(rules, name):
    return next((kind for pattern, kind in rules if re.search(pattern, name)), None)


class _SS2DShapes:
    """Tells SS2D's own matrix products apart by the parameter shapes among their inputs."""

    def __init__(self, m):
        Di, N, R = m.d_inner, m.d_state, m.dt_rank
        self.x_proj = {(4, R + 2 * N, Di), (4 * (R + 2 * N), Di), (Di, 4 * (R + 2 * N))}
        self.dt_proj = {(4, Di, R), (4, R, Di), (4 * Di, R), (R, 4 * Di)}

    def kind(self, shapes):
        shapes = set(_flat_shapes(shapes))
        if shapes & self.x_proj:
            return 'x_proj'
        if shapes & self.dt_proj:
            return 'dt_proj'
        return 'in_proj'


class _Hooks:
    """``record_function`` ranges around every module's forward, named ``module::<qualified name>``."""

    def __init__(self, model):
        self.handles, self.stack = [], []
        self.modules = dict(model.named_modules())
        for name, m in self.modules.items():
            self.handles.append(m.register_forward_pre_hook(self._enter(name or '<root>')))
            self.handles.append(m.register_forward_hook(self._exit, always_call=True))

    def _enter(self, name):
        def hook(module, args):
            rf = record_function(_MODULE + name)
            rf.__enter__()
            self.stack.append(rf)
        return hook

    def _exit(self, module, args, output):
        if self.stack:
            self.stack.pop().__exit__(None, None, None)

    def remove(self):
        for h in self.handles:
            h.remove()


@dataclass
class Breakdown:
    """One profiled configuration. ``rows``: kind -> [forward ms, backward ms] per image."""
    model: str
    mode: str
    batch: int
    threads: int
    height: int
    width: int
    wall_ms: float  # best un-profiled step time per image
    profiled_ms: float  # sum of the rows (the profiled step time per image)
    rows: dict = field(default_factory=dict)
    top_ops: list = field(default_factory=list)  # (op, ms per image), self time, forward + backward
    kind_ops: dict = field(default_factory=dict)  # kind -> [(op, ms per image)], most expensive first

    def as_dict(self):
        return dict(model=self.model, mode=self.mode, batch=self.batch, threads=self.threads, height=self.height,
                    width=self.width, wall_ms=self.wall_ms, profiled_ms=self.profiled_ms,
                    rows={k: dict(forward=f, backward=b) for k, (f, b) in self.rows.items()},
                    top_ops=self.top_ops, kind_ops=self.kind_ops)


def _ancestors(e):
    while e is not None:
        yield e
        e = e.cpu_parent


class _Attributor:
    """Kind of a forward event, from its enclosing module ranges and its outermost op inside the innermost one."""

    def __init__(self, modules):
        self.modules = modules
        self.ss2d = {}

    def forward_kind(self, e):
        if e.name.startswith(_MODULE):
            return 'python / dispatch'
        names, top = [], None
        for a in _ancestors(e):
            if _is_scan(a.name):
                return 'scan op'
            if a.name.startswith(_MODULE):
                names.append(a.name[len(_MODULE):])
            elif not names:
                top = a  # the outermost op below the innermost module range
        names = [n for n in names if n != '<root>']
        if not names:
            return 'loss'  # outside the model: the training loss
        for name in reversed(names):
            kind = _match(REGIONS, name)
            if kind:
                return kind
        innermost = self.modules.get(names[0])
        if type(innermost).__name__ == 'SS2D':
            return self._ss2d_kind(innermost, top)
        for name in names:
            kind = _match(RULES, name)
            if kind:
                return kind
            if isinstance(self.modules.get(name), nn.LayerNorm):
                return 'norms'
        op = top.name if top is not None else e.name
        if op in _COPIES or op == 'aten::permute':
            return 'layout copies'
        if op in ('aten::add', 'aten::add_', 'aten::mul', 'aten::div', 'aten::bernoulli_', 'aten::new_empty'):
            return 'residual / drop path'
        return 'other'

    def _ss2d_kind(self, module, top):
        op = top.name if top is not None else ''
        if op in _MATMULS:
            if module not in self.ss2d:
                self.ss2d[module] = _SS2DShapes(module)
            return self.ss2d[module].kind(shape for t in _subtree(top) for shape in (t.input_shapes or []))
        if op in ('aten::exp', 'aten::neg', 'aten::to', 'aten::flatten', 'aten::_to_copy') and _is_param_op(top):
            return 'scan params'
        if op == 'aten::mul':
            return 'gate'
        if op in _COPIES or op in ('aten::permute', 'aten::view', 'aten::split_with_sizes', 'aten::split'):
            return 'layout copies'
        return 'other'


def _subtree(e):
    yield e
    for c in e.cpu_children:
        yield from _subtree(c)


def _is_scan(name):
    """The selective-scan custom ops (``vmamba::ss2d_scan``, ...) and their autograd wrappers."""
    return name.startswith('vmamba::') or '_vmamba_' in name


def _flat_shapes(shapes):
    """The tensor shapes among an op's recorded input shapes (tensor lists, as einsum's, are nested lists)."""
    for s in shapes:
        if s and isinstance(s[0], (list, tuple)):
            yield from _flat_shapes(s)
        elif s:
            yield tuple(s)


def _is_param_op(e):
    """A small op on SS2D's SSM parameters (A = -exp(A_logs), casts): tensors of at most 2 dims."""
    return all(len(s) <= 2 for s in (e.input_shapes or []) if s)


def profile_subject(subject, mode='inference', batch=1, height=224, width=224, warmup=1, iters=3):
    """Profile ``iters`` steps of ``subject`` (a :class:`~vmamba.analysis.subjects.Subject`) after ``warmup``.

    ``mode``: ``'inference'`` (``predict`` under no_grad, eval mode) or ``'train'`` (loss + backward in train mode,
    no optimizer, fp32). Returns a :class:`Breakdown`; timings use torch's current thread count.

    Best-of: every kind's (and op's) time is the minimum over the profiled steps, and ``wall_ms`` the fastest of
    ``iters`` un-profiled steps, so that a step slowed down by other processes on the machine counts least.
    """
    if mode not in ('inference', 'train'):
        raise ValueError(f"mode must be 'inference' or 'train', got {mode!r}")
    model = subject.model
    threads = torch.get_num_threads()
    data = subject.batch(batch, height, width, targets=mode == 'train')
    model.train(mode == 'train')

    def step():
        if mode == 'inference':
            with torch.no_grad():
                subject.predict(data)
        else:
            subject.loss(data).backward()
            model.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    torch.set_num_threads(threads)  # a backend's first call may have changed it (e.g. numba's OpenMP pool start)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)

    hooks = _Hooks(model)
    try:
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for i in range(iters):
                with record_function(f'{_STEP}{i}'):
                    step()
    finally:
        hooks.remove()
    model.eval()

    attr = _Attributor(hooks.modules)
    fwd_kind_by_seq = {}
    # per step: kind -> [forward µs, backward µs]; (kind, op) -> µs
    rows = [defaultdict(lambda: [0.0, 0.0]) for _ in range(iters)]
    ops = [defaultdict(float) for _ in range(iters)]
    backward_events = []
    for e in prof.events():
        chain = list(_ancestors(e))
        steps = [a for a in chain if a.name.startswith(_STEP)]
        if not steps or e is steps[0]:
            continue
        i = int(steps[0].name[len(_STEP):])
        node = next((a for a in chain if a.name.startswith(_BACKWARD)), None)
        if node is not None:
            backward_events.append((i, e, node))
            continue
        kind = attr.forward_kind(e)
        if e.sequence_nr >= 0 and not e.name.startswith(_MODULE):
            # nested ops share their outer op's number; the innermost (the one that made the node) wins
            fwd_kind_by_seq[(e.fwd_thread or e.thread, e.sequence_nr)] = kind
        rows[i][kind][0] += e.self_cpu_time_total
        if not e.name.startswith(_MODULE):
            ops[i][(kind, e.name)] += e.self_cpu_time_total
    for i, e, node in backward_events:
        if 'AccumulateGrad' in node.name:
            kind = 'grad accumulation'
        elif _is_scan(node.name):
            kind = 'scan op'
        else:
            kind = fwd_kind_by_seq.get((node.fwd_thread, node.sequence_nr), 'other')
        rows[i][kind][1] += e.self_cpu_time_total
        ops[i][(kind, 'bwd ' + (e.name if e is not node else '(autograd engine)'))] += e.self_cpu_time_total

    scale = 1e-3 / batch  # µs per step -> ms per image

    def best(per_step, key, j=None):  # the fastest step's time (0 in a step where the key did not occur)
        return min((r[key] if j is None else r[key][j]) if key in r else 0.0 for r in per_step) * scale
    best_rows = {k: [best(rows, k, 0), best(rows, k, 1)] for k in {k for r in rows for k in r}}
    best_ops = {k: best(ops, k) for k in {k for r in ops for k in r}}
    totals = defaultdict(float)
    kind_ops = defaultdict(list)
    for (kind, op), ms in sorted(best_ops.items(), key=lambda kv: -kv[1]):
        totals[op[4:] if op.startswith('bwd ') else op] += ms
        kind_ops[kind].append((op, ms))
    top = sorted(totals.items(), key=lambda kv: -kv[1])[:15]
    h, w = data.images.shape[-2:]
    return Breakdown(subject.name, mode, batch, torch.get_num_threads(), int(h), int(w),
                     wall_ms=min(times) * 1e3 / batch, profiled_ms=sum(f + b for f, b in best_rows.values()),
                     rows=best_rows, top_ops=top, kind_ops={k: v[:6] for k, v in kind_ops.items()})


def _ordered_kinds(breakdowns):
    kinds = {k for b in breakdowns for k in b.rows}
    known = [k for k in KIND_ORDER if k in kinds]
    rest = sorted(kinds - set(known), key=lambda k: -sum(sum(b.rows.get(k, (0, 0))) for b in breakdowns))
    return known + rest


def format_breakdowns(breakdowns):
    """A markdown table: one row per kind, forward (and backward in training) ms/img per model, and % of total."""
    train = any(b.mode == 'train' for b in breakdowns)
    head = ['kind']
    for b in breakdowns:
        head += [f'{b.model} fwd', f'{b.model} bwd', f'{b.model} %'] if train else [f'{b.model} ms', f'{b.model} %']
    lines = ['| ' + ' | '.join(head) + ' |', '|---|' + '---:|' * (len(head) - 1)]

    def cell(v):
        return f'{v:.2f}' if v >= 0.005 else ('0' if v == 0 else '<0.01')
    for kind in _ordered_kinds(breakdowns):
        row = [kind]
        for b in breakdowns:
            if kind not in b.rows:
                row += ['–'] * (3 if train else 2)
                continue
            f, bw = b.rows[kind]
            pct = 100 * (f + bw) / b.profiled_ms if b.profiled_ms else 0.0
            row += [cell(f), cell(bw), f'{pct:.1f}'] if train else [cell(f), f'{pct:.1f}']
        lines.append('| ' + ' | '.join(row) + ' |')
    total = ['**profiled total**']
    wall = ['**un-profiled step (best)**']
    for b in breakdowns:
        fw = sum(f for f, _ in b.rows.values())
        bw = sum(x for _, x in b.rows.values())
        total += [f'**{fw:.2f}**', f'**{bw:.2f}**', '100'] if train else [f'**{fw:.2f}**', '100']
        wall += [f'**{b.wall_ms:.2f}**', '', ''] if train else [f'**{b.wall_ms:.2f}**', '']
    lines += ['| ' + ' | '.join(total) + ' |', '| ' + ' | '.join(wall) + ' |']
    return '\n'.join(lines)


def format_top_ops(breakdown, n=12, per_kind=False):
    """The ``n`` most expensive ops (self time, ms/img); with ``per_kind`` also the main ops of every kind."""
    lines = [f'top ops of {breakdown.model} (self time, ms/img): ' +
             ', '.join(f'{op} {ms:.2f}' for op, ms in breakdown.top_ops[:n])]
    if per_kind:
        for kind in _ordered_kinds([breakdown]):
            lines.append(f'  {kind}: ' + ', '.join(f'{op} {ms:.2f}' for op, ms in breakdown.kind_ops.get(kind, [])))
    return '\n'.join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Live tensor memory: which tensors the model code holds at its peak (the scan op is one opaque op: its output
# counts, its internal scratch does not).
# ----------------------------------------------------------------------------------------------------------------
class LiveTensorPeak:
    """Track every tensor storage created by an op inside the ``with`` block and record the peak of their total size.

    ``peak_bytes``: the largest total of live storages; ``at_peak``: ``[(bytes, label, shape)]`` of the storages
    alive at that moment, largest first, with ``label`` = ``module name: op`` (module from the forward hooks of
    ``model``, if given). Custom ops (the selective scan) are seen from outside: their outputs are tracked, what
    they allocate internally is not. Tensors that existed before the block (weights, the input) are not counted.
    """

    def __init__(self, model=None):
        self.model = model
        self.current = self.peak_bytes = 0
        self.at_peak = []
        self._live = {}
        self._names = []
        self._handles = []

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        tracker = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                # outputs sharing an input's memory (views, in-place results) are not new allocations
                inputs = {t.untyped_storage().data_ptr() for t in torch.utils._pytree.tree_leaves((args, kwargs))
                          if isinstance(t, torch.Tensor)}
                for t in torch.utils._pytree.tree_leaves(out):
                    if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                        tracker._track(t, func)
                return out

        if self.model is not None:
            for name, m in self.model.named_modules():
                self._handles.append(m.register_forward_pre_hook(lambda mod, args, n=name: self._names.append(n)))
                self._handles.append(m.register_forward_hook(self._exit_module, always_call=True))
        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        for h in self._handles:
            h.remove()
        return False

    def _exit_module(self, module, args, output):
        self._names.pop()

    def _track(self, t, func):
        storage = t.untyped_storage()
        key, nbytes = storage.data_ptr(), storage.nbytes()
        if not nbytes or key in self._live:
            return  # a view, an in-place result, or empty
        module = next((n for n in reversed(self._names) if n), '')
        self._live[key] = (nbytes, f'{module}: {func.__name__}' if module else func.__name__, tuple(t.shape))
        self.current += nbytes
        weakref.finalize(storage, self._free, key)
        if self.current > self.peak_bytes:
            self.peak_bytes = self.current
            self.at_peak = sorted(self._live.values(), key=lambda v: -v[0])

    def _free(self, key):
        entry = self._live.pop(key, None)
        if entry is not None:
            self.current -= entry[0]
