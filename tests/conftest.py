"""Session-wide test setup.

The Triton kernels are tested on CPU under the Triton interpreter. ``TRITON_INTERPRET=1`` has to be in the
environment before *anything* imports triton (torch, mmengine and the analysis tools can import it first), since
``@triton.jit`` picks interpreter or compiler when a function is decorated, triton's own ``tl.zeros``/``tl.sum``
included. This root conftest is imported before any test module, hence it is set here. On a machine with a GPU,
``VMAMBA_TEST_GPU=1`` runs the same tests compiled on CUDA instead.
"""
import os

ON_GPU = os.environ.get('VMAMBA_TEST_GPU') == '1'
if not ON_GPU:
    os.environ['TRITON_INTERPRET'] = '1'
