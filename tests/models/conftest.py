"""Test setup for the whole-model tests: they share the scan tests' helpers and Triton interpreter setup.

The backend comparisons (``test_models_scan_backends.py``) run the Triton kernels under the interpreter on
CPU, which is only quick with the vectorised scan emulation that ``tests/ops/conftest.py`` installs. A
conftest is not importable by name, so that file is loaded here by path (installing the same patch twice is
harmless), and ``tests/ops`` goes on ``sys.path`` for ``ops_testlib``: the model tests then run the same
whether or not ``tests/ops`` is collected in the same session.
"""
import importlib.util
import os.path as osp
import sys

_OPS_TESTS = osp.join(osp.dirname(osp.abspath(__file__)), '..', 'ops')
if _OPS_TESTS not in sys.path:
    sys.path.insert(0, _OPS_TESTS)
_spec = importlib.util.spec_from_file_location('_vmamba_ops_test_setup', osp.join(_OPS_TESTS, 'conftest.py'))
_spec.loader.exec_module(importlib.util.module_from_spec(_spec))
