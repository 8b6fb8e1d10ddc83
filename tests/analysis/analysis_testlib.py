"""Shared helpers for the analysis tests: importing the tools (scripts, not a package)."""
import importlib.util
import os.path as osp

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def tool(name):
    """Import tools/analysis/<name>.py as a module."""
    path = osp.join(REPO, 'tools', 'analysis', f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'vmamba_analysis_tool_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
