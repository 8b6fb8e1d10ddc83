"""Shared helpers for the analysis tests: importing the analysis tools (scripts, not a package)."""
from repo_testlib import tool as _tool


def tool(name):
    """Import tools/analysis/<name>.py as a module."""
    return _tool(f'analysis/{name}')
