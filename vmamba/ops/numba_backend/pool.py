"""This backend's own thread pool: where the kernels run when torch's OpenMP team cannot (:mod:`.team` not
available: ATen not on OpenMP, its runtime not found, or ``VMAMBA_CPU_TEAM=0``).

The kernels are ``nogil``, so plain Python threads run them in parallel. ``numba.prange`` would do the same
inside the kernels, at the price of a much longer compile. Tasks are split exactly as the team splits them
(:func:`.team.next_range`), and taken from a shared queue, so a busy core just takes fewer.
"""
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ['run']

_POOL = []  # [ThreadPoolExecutor] once started; grown (replaced) when a call wants more threads
_POOL_LOCK = threading.Lock()


def _workers(n):
    """A pool of at least n worker threads."""
    with _POOL_LOCK:
        if not _POOL or _POOL[0]._max_workers < n:
            if _POOL:
                _POOL.pop().shutdown(wait=False)
            _POOL.append(ThreadPoolExecutor(max_workers=n, thread_name_prefix='vmamba-numba'))
        return _POOL[0]


def run(fn, n_items, tasks, threads, args):
    """``fn(p0, p1, *args)`` over [0, n_items) in ``tasks`` tasks (task k is n_items k / tasks .. n_items (k + 1)
    / tasks) on ``threads`` threads, the calling one included; returns when all are done."""
    pool = _workers(threads - 1)
    bounds = [n_items * k // tasks for k in range(tasks + 1)]
    queue = list(range(tasks - 1, -1, -1))
    lock = threading.Lock()

    def drain():
        while True:
            with lock:
                if not queue:
                    return
                k = queue.pop()
            fn(bounds[k], bounds[k + 1], *args)

    futures = [pool.submit(drain) for _ in range(threads - 1)]
    try:
        drain()
    finally:
        for f in futures:
            f.result()
