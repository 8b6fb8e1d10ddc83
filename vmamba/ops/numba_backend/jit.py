"""How this backend's code is compiled: one set of numba options for every module of the package.

* ``cache=True``: compiled on first use, loaded from numba's on-disk cache by later processes.
  ``VMAMBA_NUMBA_NOCACHE=1`` disables the cache (for asm inspection).
* FMA contraction is the only fast-math flag that changes results (no nnan/ninf/reassoc: the range reductions
  of :mod:`.fastmath` need their order, and NaN must propagate); ``nsz``/``arcp`` let LLVM vectorise freely.
* ``nogil``: the thread pool (:mod:`.pool`) runs the kernels from several Python threads at once.
* ``error_model='numpy'``: no Python exception checks around divisions inside the loops.

numba's cache checks only the source file of the function it caches, while a kernel here calls functions of
other files of this package (and the team's cfuncs call the kernels). :func:`_stamp_with_package` makes the
cache's source stamp that of the whole package, so that editing any of its files recompiles everything.
"""
import os
import threading

from numba.core import caching

__all__ = ['CACHE', 'JIT', 'CFUNC', 'COMPILE_LOCK']

CACHE = os.environ.get('VMAMBA_NUMBA_NOCACHE') != '1'
#: Options of every ``njit`` kernel and maths function.
JIT = dict(cache=CACHE, fastmath={'contract', 'nsz', 'arcp'}, error_model='numpy', nogil=True)
#: Options of the thread team's helpers and cfuncs (no arithmetic of their own).
CFUNC = dict(cache=CACHE, nogil=True)
#: Held while compiling anything that changes process-wide LLVM options or is compiled once per process.
COMPILE_LOCK = threading.Lock()

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def _package_stamp():
    """(name, mtime, size) of every source file of this package."""
    names = sorted(n for n in os.listdir(_PACKAGE) if n.endswith('.py'))
    stats = [(n, os.stat(os.path.join(_PACKAGE, n))) for n in names]
    return tuple((n, st.st_mtime, st.st_size) for n, st in stats)


def _stamp_with_package(locator_cls):
    """A cache locator like ``locator_cls`` whose source stamp, for this package's files, is the package's."""

    class PackageLocator(locator_cls):
        @classmethod
        def from_function(cls, py_func, py_file):
            if os.path.dirname(os.path.abspath(py_file)) != _PACKAGE:
                return None
            return super().from_function(py_func, py_file)

        def get_source_stamp(self):
            return _package_stamp()

    PackageLocator.__name__ = f'Package{locator_cls.__name__}'
    return PackageLocator


def _install_locators():
    """Put a package-stamped copy of each file-backed locator before numba's (same order, so a user-provided
    cache directory still wins). Once per process; numba internals, hence the care."""
    classes = getattr(getattr(caching, '_CacheImpl', None), '_locator_classes', None)
    if not isinstance(classes, list) or any(getattr(c, 'vmamba_package', False) for c in classes):
        return
    names = ('UserProvidedCacheLocator', 'InTreeCacheLocator', 'UserWideCacheLocator')
    bases = [getattr(caching, n, None) or getattr(caching, '_' + n, None) for n in names]
    ours = [_stamp_with_package(c) for c in bases if c in classes]
    for c in ours:
        c.vmamba_package = True
    classes[:0] = ours


_install_locators()
