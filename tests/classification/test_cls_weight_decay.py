"""Weight decay as the official classification code: none for 1-D parameters and names ending in `.bias`.

That rule (``set_weight_decay`` in the official trainer) spares biases, LayerNorms and ``Ds``, but decays
the 2-D ``A_logs`` and ``dt_projs_bias``. The configs express it with mmengine's norm/bias/flat multipliers;
these tests build the real optimizer from a config and compare every parameter with the rule.
"""
import re

import pytest
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

from cls_testlib import SMALL_ARCHS, load_config


def decay_by_name(cfg, shapes=None):
    """{parameter name: weight decay the optimizer built from ``cfg`` applies}, for the config's classifier.

    ``shapes``, if given, is filled with {parameter name: shape}."""
    import vmamba.tasks.classification  # noqa: F401
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model)
    wrapper_cfg = cfg.optim_wrapper.copy()
    wrapper_cfg.type = 'OptimWrapper'  # the AMP wrapper needs a GPU; the parameter groups are the same
    wrapper_cfg.pop('loss_scale', None)
    wrapper = build_optim_wrapper(model, wrapper_cfg)
    decay = {id(p): group['weight_decay'] for group in wrapper.optimizer.param_groups for p in group['params']}
    if shapes is not None:
        shapes.update({name: tuple(p.shape) for name, p in model.named_parameters()})
    return {name: decay[id(p)] for name, p in model.named_parameters()}


def official_rule(name, param_shape):
    return 0.0 if len(param_shape) == 1 or name.endswith('.bias') else 0.05


def generic(name):
    """Block and stage indices replaced by '*', so one block stands for all."""
    return re.sub(r'layers\.\d+\.blocks\.\d+', 'layers.*.blocks.*', re.sub(r'layers\.\d+\.downsample',
                                                                           'layers.*.downsample', name))


@pytest.mark.parametrize('design', sorted(SMALL_ARCHS))
def test_every_parameter_follows_the_official_rule(design, skip_weight_init):
    shapes = {}
    decay = decay_by_name(load_config('vmamba_tiny_in1k.py', arch=SMALL_ARCHS[design]), shapes)
    assert decay == {n: official_rule(n, shapes[n]) for n in shapes}


def test_which_parameters_get_no_decay_final_design(skip_weight_init):
    decay = decay_by_name(load_config('vmamba_tiny_in1k.py', arch=SMALL_ARCHS['final']))
    no_decay = {generic(n) for n, wd in decay.items() if wd == 0}
    assert no_decay == {
        'backbone.patch_embed.0.bias', 'backbone.patch_embed.2.weight', 'backbone.patch_embed.2.bias',
        'backbone.patch_embed.5.bias', 'backbone.patch_embed.7.weight', 'backbone.patch_embed.7.bias',
        'backbone.layers.*.blocks.*.norm.weight', 'backbone.layers.*.blocks.*.norm.bias',
        'backbone.layers.*.blocks.*.op.Ds',
        'backbone.layers.*.blocks.*.op.out_norm.weight', 'backbone.layers.*.blocks.*.op.out_norm.bias',
        'backbone.layers.*.blocks.*.norm2.weight', 'backbone.layers.*.blocks.*.norm2.bias',
        'backbone.layers.*.blocks.*.mlp.fc1.bias', 'backbone.layers.*.blocks.*.mlp.fc2.bias',
        'backbone.layers.*.downsample.1.bias', 'backbone.layers.*.downsample.3.weight',
        'backbone.layers.*.downsample.3.bias',
        'backbone.outnorm3.weight', 'backbone.outnorm3.bias', 'head.fc.bias'}
    decayed = {generic(n) for n, wd in decay.items() if wd == 0.05}
    # The two SSM parameters the official code decays although they look like "no decay" ones.
    assert {'backbone.layers.*.blocks.*.op.A_logs', 'backbone.layers.*.blocks.*.op.dt_projs_bias'} <= decayed
    assert decayed == {
        'backbone.patch_embed.0.weight', 'backbone.patch_embed.5.weight',
        'backbone.layers.*.blocks.*.op.in_proj.weight', 'backbone.layers.*.blocks.*.op.conv2d.weight',
        'backbone.layers.*.blocks.*.op.x_proj_weight', 'backbone.layers.*.blocks.*.op.dt_projs_weight',
        'backbone.layers.*.blocks.*.op.dt_projs_bias', 'backbone.layers.*.blocks.*.op.A_logs',
        'backbone.layers.*.blocks.*.op.out_proj.weight',
        'backbone.layers.*.blocks.*.mlp.fc1.weight', 'backbone.layers.*.blocks.*.mlp.fc2.weight',
        'backbone.layers.*.downsample.1.weight', 'head.fc.weight'}


def test_which_parameters_get_no_decay_vanilla_design(skip_weight_init):
    decay = decay_by_name(load_config('vmamba_tiny_in1k.py', arch=SMALL_ARCHS['vanilla']))
    no_decay = {generic(n) for n, wd in decay.items() if wd == 0}
    assert no_decay == {
        'backbone.patch_embed.0.bias', 'backbone.patch_embed.2.weight', 'backbone.patch_embed.2.bias',
        'backbone.layers.*.blocks.*.norm.weight', 'backbone.layers.*.blocks.*.norm.bias',
        'backbone.layers.*.blocks.*.op.conv2d.bias', 'backbone.layers.*.blocks.*.op.Ds',
        'backbone.layers.*.blocks.*.op.out_norm.weight', 'backbone.layers.*.blocks.*.op.out_norm.bias',
        'backbone.layers.*.downsample.norm.weight', 'backbone.layers.*.downsample.norm.bias',
        'backbone.outnorm3.weight', 'backbone.outnorm3.bias', 'head.fc.bias'}
    assert decay['backbone.layers.0.blocks.0.op.A_logs'] == 0.05
    assert decay['backbone.layers.0.downsample.reduction.weight'] == 0.05
