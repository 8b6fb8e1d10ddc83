"""Session-wide test setup.

The Triton kernels are tested on CPU under the Triton interpreter. ``TRITON_INTERPRET=1`` has to be in the
environment before *anything* imports triton (torch, mmengine and the analysis tools can import it first), since
``@triton.jit`` picks interpreter or compiler when a function is decorated, triton's own ``tl.zeros``/``tl.sum``
included. This root conftest is imported before any test module, hence it is set here. On a machine with a GPU,
``VMAMBA_TEST_GPU=1`` runs the same tests compiled on CUDA instead.

The interpreter emulates ``tl.associative_scan`` with a custom combine one element at a time in Python
(~50 us per element), which would make the long-L cases take minutes. :func:`_vectorised_scan` replaces that
emulation with an equivalent log-depth (Hillis-Steele) scan over whole numpy arrays. It only changes how the
interpreter evaluates the scan (the combine function is the kernel's own, applied to the same operands in a
tree order, as the GPU does); the kernels under test are unchanged. It is installed here, for every test
folder, since the op tests and the whole-model tests both run the kernels.
"""
import os

import numpy as np

ON_GPU = os.environ.get('VMAMBA_TEST_GPU') == '1'
if not ON_GPU:
    os.environ['TRITON_INTERPRET'] = '1'


def _vectorised_scan(self, inputs):
    """Inclusive scan of a tuple of tensors along ``self.axis`` in log2(n) vectorised combine steps."""
    axis = self.axis
    acc = [t.handle.data.copy() for t in inputs]
    dtypes = [t.dtype for t in inputs]
    n = acc[0].shape[axis]

    def part(a, start, stop):
        index = [slice(None)] * a.ndim
        index[axis] = slice(start, stop)
        return a[tuple(index)]

    offset = 1
    while offset < n:
        # Combine every element with the one ``offset`` before it. Blocks must keep their power-of-two shape,
        # so the left operands are the rolled arrays; the wrapped-around first ``offset`` results are dropped.
        left = [self.to_tensor(np.roll(a, offset, axis=axis), dt) for a, dt in zip(acc, dtypes)]
        right = [self.to_tensor(a, dt) for a, dt in zip(acc, dtypes)]
        with np.errstate(all='ignore'):
            out = self.combine_fn.fn(*left, *right)
        out = out if isinstance(out, tuple) else (out,)
        new = [a.copy() for a in acc]
        for a, o in zip(new, out):
            part(a, offset, n)[...] = part(o.handle.data, offset, n)
        acc = new
        offset *= 2
    return [self.to_tensor(np.ascontiguousarray(a), dt) for a, dt in zip(acc, dtypes)]


if not ON_GPU:
    try:
        from triton.runtime import interpreter as _interpreter
    except ImportError:  # no triton: its tests skip
        pass
    else:
        _interpreter.ScanOps.generic_scan = _vectorised_scan
