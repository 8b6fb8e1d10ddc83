"""The CPU-speed choices of the model code change nothing but speed: channels_last conv weights, blocked MLP
inference. (Speed itself is measured by tools/analysis/*.py, not here.)"""
import copy

import pytest
import torch
import torch.nn as nn

from vmamba.models import VMamba, VSSM, load_official_weights
from vmamba.models.layers import Mlp

TINY = dict(dims=8, depths=(1, 1, 1, 1))


def conv_weights(model):
    return [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_conv_weights_are_channels_last_and_stay_so_after_loading(tmp_path):
    model = VSSM('tiny')
    assert conv_weights(model) and all(w.is_contiguous(memory_format=torch.channels_last)
                                       for w in conv_weights(model))
    path = tmp_path / 'ckpt.pth'
    # an official file holds plain contiguous tensors
    torch.save({'model': {k: v.contiguous() for k, v in model.state_dict().items()}}, path)
    fresh = VSSM('tiny')
    load_official_weights(fresh, str(path))
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights(fresh))
    for a, b in zip(conv_weights(model), conv_weights(fresh)):
        assert torch.equal(a, b)


def test_channels_last_weights_give_the_contiguous_weights_results():
    torch.manual_seed(0)
    model = VMamba(arch=dict(TINY, stem='patchify', downsample='conv')).eval()
    plain = copy.deepcopy(model)
    for m in plain.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data = m.weight.data.contiguous()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), plain(x)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_blocked_mlp_inference_equals_one_piece(one_thread):
    torch.manual_seed(0)
    mlp = Mlp(16, 64)
    x = torch.randn(2, 9, 11, 16)
    with torch.no_grad():
        whole = mlp(x)  # 198 positions: one piece at the default sizes
        mlp.blocked_above = 0
        mlp.block_elems = 64 * 7  # 7 positions a block, the last one partial
        blocked = mlp(x)
    torch.testing.assert_close(blocked, whole, rtol=1e-6, atol=1e-6)
    assert blocked.shape == x.shape


@pytest.mark.filterwarnings('ignore::FutureWarning')  # torch.jit.trace's deprecation notice
def test_blocked_mlp_is_single_threaded_inference_only(one_thread):
    mlp = Mlp(16, 64)
    mlp.blocked_above, mlp.block_elems = 0, 64  # one position a block
    calls = []
    mlp.fc1.register_forward_hook(lambda *args: calls.append(1))
    x = torch.randn(1, 4, 4, 16)
    mlp(x).sum().backward()  # autograd on: one piece
    assert len(calls) == 1 and mlp.fc1.weight.grad is not None
    with torch.no_grad():
        mlp(x)
        assert len(calls) == 1 + 16
        torch.set_num_threads(2)
        mlp(x)
        assert len(calls) == 1 + 16 + 1
        torch.set_num_threads(1)
    with torch.no_grad():  # a trace (FLOP counters, ONNX) is one piece, so it holds for any size
        traced = torch.jit.trace(mlp.eval(), x, check_trace=False)
        y = torch.randn(1, 8, 8, 16)
        torch.testing.assert_close(traced(y), mlp(y))
