"""Where the repository is, for every test: its root, its configs, its tools (scripts, not a package), and the
environment a subprocess needs to import this checkout's ``vmamba`` (not an installed copy)."""
import importlib.util
import os
import os.path as osp
import subprocess
import sys

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO, 'configs')
TOOLS = osp.join(REPO, 'tools')


def tool(path):
    """``tools/<path>.py`` imported as a module, e.g. ``tool('train')``, ``tool('analysis/bench_scan')``."""
    name = 'vmamba_tool_' + path.replace('/', '_')
    spec = importlib.util.spec_from_file_location(name, osp.join(TOOLS, f'{path}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def subprocess_env(*paths, **variables):
    """``os.environ`` with this checkout (and ``paths``) first on ``PYTHONPATH``, plus ``variables``."""
    python_path = os.pathsep.join([REPO, *paths, os.environ.get('PYTHONPATH', '')])
    return dict(os.environ, PYTHONPATH=python_path, **variables)


def run_tool(path, *args, timeout=600, cwd=REPO, **variables):
    """``tools/<path>.py ARGS`` in a subprocess: (exit status, stdout + stderr)."""
    proc = subprocess.run([sys.executable, osp.join(TOOLS, f'{path}.py'), *map(str, args)], cwd=cwd,
                          env=subprocess_env(**variables), capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def run_python(*args, cwd=REPO, timeout=900):
    """``python ARGS`` in a subprocess with this checkout importable; fails the test (with the output's end)
    unless it exits 0. Returns stdout + stderr."""
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=str(cwd), env=subprocess_env(), capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f'{args[:2]} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}'
    return proc.stdout + proc.stderr
