"""Fixtures for the classification tests (helpers are in cls_testlib.py)."""
import pytest
import torch


@pytest.fixture
def skip_weight_init(monkeypatch):
    """Build models without their (slow) random initialisation, for tests of names and shapes only."""
    identity = lambda tensor, *args, **kwargs: tensor  # noqa: E731
    for name in ('trunc_normal_', 'kaiming_uniform_', 'uniform_', 'normal_'):
        monkeypatch.setattr(torch.nn.init, name, identity)
