"""Official checkpoints load into the classification configs, EMA or raw, giving the official model's logits.

The "official" files are written here in the official layout: ``{'model': VSSM state dict, 'model_ema': ...,
'config': <a pickled yacs CfgNode>, ...}``. They load through the mmengine Runner exactly as
``load_from`` / ``tools/test.py`` load them.
"""

import pytest
import torch

from vmamba.models import VSSM, CheckpointMismatchError

from checkpoint_testlib import official_file
from cls_testlib import SMALL_ARCHS, build_runner, load_config, small_arch
from repo_testlib import tool as load_tool


def write_official(path, arch, with_ema=True, seed=0):
    """An official-layout file; the EMA entry gets other random weights, so EMA and raw are told apart."""
    torch.manual_seed(seed)
    raw, ema = VSSM(arch=arch).eval(), VSSM(arch=arch).eval()
    official_file(path, raw.state_dict(), ema.state_dict() if with_ema else None, max_accuracy=82.5)
    return raw, ema


def runner_for(tmp_path, arch, weights='ema', ema_hook=True):
    options = {'default_hooks.checkpoint_loader.weights': weights}
    cfg = load_config('vmamba_tiny_in1k.py', arch=arch, **options)
    if not ema_hook:
        cfg.custom_hooks = []
    runner = build_runner(cfg, tmp_path / 'work')
    runner.call_hook('before_run')  # as Runner.test() does before loading (the EMA hook makes its copy here)
    return runner


def ema_hook_of(runner):
    (hook,) = [h for h in runner.hooks if type(h).__name__ == 'VMambaEMAHook']
    return hook


def logits(model, x):
    with torch.no_grad():
        return model(x, mode='tensor') if hasattr(model, 'data_preprocessor') else model(x)


@pytest.mark.parametrize('design', sorted(SMALL_ARCHS))
@pytest.mark.parametrize('weights', ['ema', 'raw'])
def test_official_checkpoint_gives_the_official_logits(tmp_path, design, weights):
    arch = SMALL_ARCHS[design]
    raw, ema = write_official(tmp_path / 'official.pth', arch)
    expected = {'ema': ema, 'raw': raw}[weights]
    runner = runner_for(tmp_path, arch, weights)
    runner.load_checkpoint(str(tmp_path / 'official.pth'))
    runner.call_hook('before_test_epoch')  # the EMA hook puts its weights in for testing
    runner.model.eval()
    x = torch.randn(2, 3, 32, 32)
    reference = logits(expected, x)
    assert reference.shape == (2, 1000)
    assert not torch.allclose(logits(raw, x), logits(ema, x), atol=1e-3)  # the pick makes a difference
    torch.testing.assert_close(logits(runner.model, x), reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('weights', ['ema', 'raw'])
def test_model_and_ema_copy_both_hold_the_picked_weights(tmp_path, weights):
    """Whichever model a validation or test pass uses, it evaluates the weights that were picked."""
    arch = SMALL_ARCHS['final']
    raw, ema = write_official(tmp_path / 'official.pth', arch)
    runner = runner_for(tmp_path, arch, weights)
    runner.load_checkpoint(str(tmp_path / 'official.pth'))
    expected = {'ema': ema, 'raw': raw}[weights]
    x = torch.randn(1, 3, 32, 32)
    for model in (runner.model, ema_hook_of(runner).ema_model.module):
        torch.testing.assert_close(logits(model.eval(), x), logits(expected, x), rtol=1e-4, atol=1e-5)


def test_without_an_ema_hook_the_model_holds_the_picked_weights(tmp_path):
    arch = SMALL_ARCHS['final']
    _, ema = write_official(tmp_path / 'official.pth', arch)
    runner = runner_for(tmp_path, arch, 'ema', ema_hook=False)
    runner.load_checkpoint(str(tmp_path / 'official.pth'))
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(logits(runner.model.eval(), x), logits(ema, x), rtol=1e-4, atol=1e-5)


def test_ema_weights_that_are_not_there_raise(tmp_path):
    arch = SMALL_ARCHS['vanilla']
    write_official(tmp_path / 'official.pth', arch, with_ema=False)  # like the vanilla-tiny release
    runner = runner_for(tmp_path, arch, 'ema')
    with pytest.raises(KeyError, match="weights='raw'"):
        runner.load_checkpoint(str(tmp_path / 'official.pth'))


@pytest.mark.parametrize('other', ['deeper', 'vanilla'])
def test_a_checkpoint_of_another_variant_raises(tmp_path, other):
    file_arch = small_arch('tiny_s1l8', depths=(1, 1, 3, 1)) if other == 'deeper' else SMALL_ARCHS['vanilla']
    write_official(tmp_path / 'official.pth', file_arch)
    runner = runner_for(tmp_path, SMALL_ARCHS['final'])
    with pytest.raises(CheckpointMismatchError, match='does not fit'):
        runner.load_checkpoint(str(tmp_path / 'official.pth'))


def test_a_real_variant_names_the_variant_the_file_belongs_to(skip_weight_init):
    """A tiny_s2l5 file given to the tiny (s1l8) config: the error names tiny_s2l5 (checked on the dict)."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    from vmamba.models.checkpoint import check_state_dict_fits
    from vmamba.tasks.classification import official_to_classifier_keys
    init_default_scope('mmpretrain')
    classifier = MODELS.build(load_config('vmamba_tiny_in1k.py').model)
    state = official_to_classifier_keys(VSSM(arch='tiny_s2l5').state_dict())
    with pytest.raises(CheckpointMismatchError, match="'tiny_s2l5'"):
        check_state_dict_fits(classifier, state)


def test_resuming_from_an_official_checkpoint_raises(tmp_path):
    arch = SMALL_ARCHS['final']
    write_official(tmp_path / 'official.pth', arch)
    runner = runner_for(tmp_path, arch)
    runner._resume = True
    with pytest.raises(ValueError, match='load_from'):
        runner.load_checkpoint(str(tmp_path / 'official.pth'))


def test_an_mmengine_checkpoint_that_does_not_fit_raises(tmp_path):
    arch = SMALL_ARCHS['final']
    runner = runner_for(tmp_path, arch, 'raw')
    state = {k: v for k, v in runner.model.state_dict().items() if not k.startswith('head.')}
    torch.save({'state_dict': state, 'meta': {}}, tmp_path / 'partial.pth')
    with pytest.raises(CheckpointMismatchError, match='missing: head.fc.weight'):
        runner.load_checkpoint(str(tmp_path / 'partial.pth'))


def test_offline_converter_writes_a_plain_mmpretrain_checkpoint(tmp_path):
    tool = load_tool('convert_checkpoint')
    arch = SMALL_ARCHS['vanilla']
    raw, _ = write_official(tmp_path / 'official.pth', arch)
    cfg = load_config('vmamba_tiny_in1k.py', arch=arch)
    cfg.dump(str(tmp_path / 'config.py'))
    tool.convert(str(tmp_path / 'config.py'), str(tmp_path / 'official.pth'), str(tmp_path / 'out.pth'), 'raw')

    # The result loads strictly with mmengine's plain loader, into a freshly built classifier.
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    classifier = MODELS.build(cfg.model)
    load_checkpoint(classifier, str(tmp_path / 'out.pth'), strict=True)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(logits(classifier.eval(), x), logits(raw, x), rtol=1e-4, atol=1e-5)
