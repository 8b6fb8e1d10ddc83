"""The selective-scan op shared by every VMamba task.

Entry points (the model calls only :func:`ss2d_selective_scan`):

- :func:`selective_scan`: the plain S6 scan with the official semantics.
- :func:`ss2d_selective_scan`: the SS2D core, 4-route cross-scan -> scan -> cross-merge, fused.
- :func:`cross_scan` / :func:`cross_merge`: the route permutation and its adjoint.
- :func:`flops_selective_scan`: the official FLOPs convention for one scan call.

Backends: ``'numba'`` (compiled CPU scan, :mod:`.numba_backend`; the default for CPU tensors when numba is
installed), ``'torch'`` (chunked PyTorch scan, :mod:`.torch_scan`; the CPU fallback and the reference for the
others' tests) and ``'triton'`` (:mod:`.triton_backend`; the default for CUDA tensors). Force one with
``backend=`` or the environment variable ``VMAMBA_SCAN_BACKEND``. With ``TRITON_INTERPRET=1`` the Triton kernels
also run on CPU tensors (slowly; that is how CI tests them), but only when asked for explicitly. Backend choice
lives in :func:`resolve_backend` only.

The ops are ``torch.library`` custom ops (``torch.ops.vmamba.*``, see :mod:`.dispatch`): ``torch.compile``
with ``fullgraph=True``, ``torch.export`` and the ONNX export in :mod:`vmamba.deploy` see one node per call.
"""
from .dispatch import (BACKENDS, cross_merge, cross_scan, flops_selective_scan, resolve_backend, selective_scan,
                       ss2d_selective_scan)
from .naive import cross_merge_ref, cross_scan_ref, route_ref, selective_scan_ref, ss2d_scan_ref

__all__ = ['selective_scan', 'ss2d_selective_scan', 'cross_scan', 'cross_merge', 'flops_selective_scan',
           'resolve_backend', 'BACKENDS',
           'selective_scan_ref', 'ss2d_scan_ref', 'cross_scan_ref', 'cross_merge_ref', 'route_ref']
