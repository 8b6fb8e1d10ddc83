"""The one checkpoint loader (vmamba/models/checkpoint_file.py): malicious pickles are refused on every Python
entry point before they run, legitimate files (the project's, the official ones, safetensors) load, and the
opt-in loads a trusted file with a warning."""
import fractions
import importlib.util
import os
import sys

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint

import vmamba  # noqa: F401  (registers the loaders with mmengine)
from vmamba.errors import CheckpointReadError, CheckpointRefusedError
from vmamba.models import VMamba, VSSM, load_checkpoint_file, load_official_weights, load_pretrained
from vmamba.models import checkpoint as checkpoint_module
from vmamba.models.checkpoint_file import (TRUST_ENV, add_trust_option, load_url, safetensors_metadata,
                                           save_safetensors)

from checkpoint_testlib import OFFICIAL_CONFIG, malicious_file, official_file, serve

ARCH = dict(dims=8, depths=(1, 1, 1, 1))
REFUSED = r'Refused to load the checkpoint .*evil\.pth: it asks for (os|posix)\.system.*--trust-checkpoint'


@pytest.fixture
def evil(tmp_path, monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)
    marker = tmp_path / 'MARKER'
    return malicious_file(tmp_path / 'evil.pth', marker), marker


def test_loader_is_importable_from_both_modules():
    assert checkpoint_module.load_checkpoint_file is load_checkpoint_file
    assert issubclass(CheckpointRefusedError, CheckpointReadError)


@pytest.mark.parametrize('entry', ['load_checkpoint_file', 'load_official_weights', 'load_pretrained',
                                   'init_cfg', 'mmengine_local'])
def test_malicious_file_is_refused_before_it_runs(evil, entry):
    path, marker = evil
    calls = {
        'load_checkpoint_file': lambda: load_checkpoint_file(path),
        'load_official_weights': lambda: load_official_weights(VSSM(arch=ARCH), str(path)),
        'load_pretrained': lambda: load_pretrained(VMamba(arch=ARCH), str(path)),
        'init_cfg': lambda: VMamba(arch=ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(path))).init_weights(),
        'mmengine_local': lambda: _load_checkpoint(str(path), map_location='cpu'),  # load_from, resume
    }
    with pytest.raises(CheckpointRefusedError, match=REFUSED) as info:
        calls[entry]()
    assert not marker.exists()
    assert info.value.needs == 'posix.system' and '\n' not in str(info.value)


def test_url_is_downloaded_to_the_hub_cache_and_refused(evil, tmp_path, monkeypatch):
    path, marker = evil
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path / 'hub'))
    good = tmp_path / 'served' / 'good.pth'
    good.parent.mkdir()
    weights = {'w': torch.randn(3, 4)}
    torch.save({'state_dict': weights}, good)
    os.replace(path, good.parent / 'evil.pth')
    with serve(good.parent) as base:
        refused = r'evil\.pth \(downloaded from http://127\.0\.0\.1:\d+/evil\.pth\): it asks for posix\.system'
        with pytest.raises(CheckpointRefusedError, match=refused) as info:
            CheckpointLoader.load_checkpoint(f'{base}/evil.pth', map_location='cpu')
        assert f'downloaded from {base}/evil.pth' in str(info.value) and 'posix.system' in str(info.value)
        loaded = CheckpointLoader.load_checkpoint(f'{base}/good.pth', map_location='cpu')
    assert not marker.exists()
    assert (tmp_path / 'hub' / 'checkpoints' / 'evil.pth').is_file()
    assert torch.equal(loaded['state_dict']['w'], weights['w'])
    # a second load reads the cache, with the server gone
    assert torch.equal(load_url(f'{base}/good.pth')['state_dict']['w'], weights['w'])


def test_opt_in_loads_a_trusted_file_and_warns(evil, monkeypatch, capsys):
    path, marker = evil
    ckpt = load_checkpoint_file(path, trust=True)
    assert marker.exists() and ckpt['meta']['epoch'] == 9
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f'warning: {path}: loading with a full unpickle') \
        and 'posix.system' in err[0]
    marker.unlink()
    monkeypatch.setenv(TRUST_ENV, '1')
    # the environment variable reaches every loader, mmengine's included
    assert _load_checkpoint(str(path), map_location='cpu')['meta']['iter'] == 9
    assert marker.exists() and str(path) in capsys.readouterr().err
    marker.unlink()
    with pytest.raises(CheckpointRefusedError):
        load_checkpoint_file(path, trust=False)  # an explicit False wins over the variable
    assert not marker.exists()


def test_trust_flag_sets_the_variable(monkeypatch):
    import argparse
    monkeypatch.setenv(TRUST_ENV, '0')  # (so that monkeypatch restores the variable afterwards)
    parser = argparse.ArgumentParser()
    add_trust_option(parser)
    assert parser.parse_args([]).trust_checkpoint is False and os.environ[TRUST_ENV] == '0'
    assert parser.parse_args(['--trust-checkpoint']).trust_checkpoint is True and os.environ[TRUST_ENV] == '1'


def test_only_history_buffer_statistics_pass_the_getattr_gate(tmp_path):
    class Sneaky:  # asks for getattr(HistoryBuffer, '__init__') and then calls nothing: still refused
        def __reduce__(self):
            return getattr, (HistoryBuffer, '__init__')

    torch.save({'x': Sneaky()}, tmp_path / 'sneaky.pth')
    with pytest.raises(CheckpointRefusedError, match=r"builtins\.getattr\(.*HistoryBuffer.*'__init__'\)"):
        load_checkpoint_file(tmp_path / 'sneaky.pth')


def test_an_unlisted_class_is_refused_by_name(tmp_path):
    torch.save({'x': fractions.Fraction(1, 3)}, tmp_path / 'other.pth')
    with pytest.raises(CheckpointRefusedError, match=r'other\.pth: it asks for fractions\.Fraction, which'):
        load_checkpoint_file(tmp_path / 'other.pth')


def test_mmengine_state_and_numpy_values_load(tmp_path):
    buffer = HistoryBuffer()
    for value in (3.0, 1.0, 2.0):
        buffer.update(value)
    ckpt = {'meta': {'epoch': 1, 'best': np.float64(0.25), 'hist': np.arange(5, dtype=np.int16)},
            'message_hub': {'log_scalars': {'train/loss': buffer}, 'runtime_info': {'lr': np.float32(0.5)}},
            'optimizer': torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))]).state_dict()}
    torch.save(ckpt, tmp_path / 'mm.pth')
    loaded = load_checkpoint_file(tmp_path / 'mm.pth')
    assert loaded['meta']['best'] == np.float64(0.25) and type(loaded['meta']['best']) is np.float64
    assert loaded['meta']['hist'].dtype == np.int16 and loaded['meta']['hist'].tolist() == [0, 1, 2, 3, 4]
    loss = loaded['message_hub']['log_scalars']['train/loss']
    assert (loss.min(), loss.max(), loss.current(), loss.mean()) == (1.0, 3.0, 2.0, 2.0)
    assert loaded['optimizer']['param_groups'][0]['lr'] == 1e-3


def test_official_file_loads_without_yacs(tmp_path):
    src, ema = VSSM(arch=ARCH), VSSM(arch=ARCH)
    path = official_file(tmp_path / 'official.pth', src.state_dict(), ema.state_dict())
    assert 'yacs' not in sys.modules and importlib.util.find_spec('yacs') is None
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) == ['yacs.config.CfgNode']
    ckpt = load_checkpoint_file(path)
    assert 'yacs' not in sys.modules
    assert ckpt['config'] == OFFICIAL_CONFIG and ckpt['config']['MODEL']['VSSM']['DEPTHS'] == [2, 2, 8, 2]
    assert ckpt['lr_scheduler']['t_initial'] == 300 and ckpt['max_accuracy'] == 82.6
    dst = VSSM(arch=ARCH)
    load_official_weights(dst, path, key='model_ema')
    assert all(torch.equal(v, ema.state_dict()[k]) for k, v in dst.state_dict().items())


def test_safetensors_round_trip_is_bit_exact(tmp_path):
    model = VSSM(arch=ARCH)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    state = model.state_dict()
    torch.save(state, tmp_path / 'w.pth')
    save_safetensors(state, tmp_path / 'w.safetensors', {'variant': 'custom'})
    assert safetensors_metadata(tmp_path / 'w.safetensors') == {'variant': 'custom'}
    pth, st = load_checkpoint_file(tmp_path / 'w.pth'), load_checkpoint_file(tmp_path / 'w.safetensors')
    assert type(st) is dict and sorted(st) == sorted(pth)  # (safetensors stores the keys sorted)
    for key, value in pth.items():
        assert st[key].dtype == value.dtype and st[key].numpy().tobytes() == value.numpy().tobytes(), key
    for entry in (lambda p: load_official_weights(VSSM(arch=ARCH), p),
                  lambda p: VMamba(arch=ARCH, init_cfg=dict(type='Pretrained', checkpoint=p)).init_weights()):
        entry(str(tmp_path / 'w.safetensors'))
    backbone = VMamba(arch=ARCH)
    assert _load_checkpoint(str(tmp_path / 'w.safetensors'))['layers.0.blocks.0.op.Ds'].shape == \
        state['layers.0.blocks.0.op.Ds'].shape
    load_pretrained(backbone, str(tmp_path / 'w.safetensors'))
    assert torch.equal(backbone.state_dict()['patch_embed.0.weight'], state['patch_embed.0.weight'])
    data = (tmp_path / 'w.safetensors').read_bytes()
    (tmp_path / 'cut.safetensors').write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointReadError, match=r'cut\.safetensors: it is damaged'):
        load_checkpoint_file(tmp_path / 'cut.safetensors')
    (tmp_path / 'short.safetensors').write_bytes(data[:5])
    with pytest.raises(CheckpointReadError, match='shorter than a safetensors header'):
        load_checkpoint_file(tmp_path / 'short.safetensors')
