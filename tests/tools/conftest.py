"""Fixtures shared by the tool tests: tools/train.py and tools/test.py imported as modules (they are scripts)."""
import pytest

from repo_testlib import tool


@pytest.fixture(scope='module')
def train():
    return tool('train')


@pytest.fixture(scope='module')
def test_tool():
    return tool('test')
