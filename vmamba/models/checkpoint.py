"""Loading official VMamba checkpoints into the models, loudly.

Official classification files are dicts ``{'model', 'model_ema', 'optimizer', 'config', ...}``; they are
read, as every checkpoint file, by :func:`vmamba.models.checkpoint_file.load_checkpoint_file` (re-exported
here), which never runs code from the file unless the user opts in.

Every mismatch between a checkpoint and a model raises :class:`CheckpointMismatchError` with the
missing/unexpected/mis-shaped keys and, when the file looks like another variant, its name. The comparison
(:class:`StateDictFit`) is the one the task hooks and the tools' strict loading use too. The error classes
are defined in :mod:`vmamba.errors` (the tools report them) and re-exported here.
"""
import re

import torch

from vmamba.errors import CheckpointMismatchError, CheckpointReadError, CheckpointRefusedError

from .checkpoint_file import load_checkpoint_file, unreadable_reason
from .variants import ARCH_SETTINGS

__all__ = ['CheckpointMismatchError', 'CheckpointReadError', 'CheckpointRefusedError', 'unreadable_reason',
           'load_checkpoint_file',
           'extract_state_dict', 'convert_official_keys', 'guess_arch', 'strip_module', 'StateDictFit',
           'check_state_dict_fits', 'load_official_weights', 'load_pretrained']


def extract_state_dict(checkpoint, key=None):
    """The tensors of a loaded checkpoint: ``checkpoint[key]`` if given, else the first of
    ``model``, ``state_dict``, or the checkpoint itself when it is already a state dict.
    ``key='model_ema'`` picks the EMA weights of an official file."""
    if not isinstance(checkpoint, dict):
        raise TypeError(f'A checkpoint must be a dict, got {type(checkpoint).__name__}')
    if key is not None:
        if key not in checkpoint:
            raise KeyError(f'Checkpoint has no {key!r} entry; its entries are {sorted(checkpoint)}')
        state = checkpoint[key]
    else:
        state = next((checkpoint[k] for k in ('model', 'state_dict') if k in checkpoint), checkpoint)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f'No tensors found in the checkpoint (entries: {sorted(checkpoint)[:10]}). '
                         'Use key=... to pick the entry that holds the weights.')
    return tensors


# Early official checkpoints used other names for the same parameters.
_LEGACY_KEYS = [
    (r'^patch_embed\.proj\.', 'patch_embed.0.'),
    (r'^patch_embed\.norm\.', 'patch_embed.2.'),
    (r'\.ln_1\.', '.norm.'),
    (r'\.self_attention\.', '.op.'),
    (r'^norm\.', 'classifier.norm.'),
    (r'^head\.', 'classifier.head.'),
]


def convert_official_keys(state_dict, prefix=None):
    """Strip ``prefix`` (e.g. ``'backbone.'``) and DDP's ``module.``, and rename legacy keys.

    Without a prefix, a detector/segmentor checkpoint (every key under ``backbone.``) is recognised."""
    if prefix is None and all(k.startswith('backbone.') for k in state_dict):
        prefix = 'backbone.'
    out = {}
    for k, v in state_dict.items():
        if prefix:
            if not k.startswith(prefix):
                continue
            k = k[len(prefix):]
        if k.startswith('module.'):
            k = k[len('module.'):]
        for pattern, repl in _LEGACY_KEYS:
            k = re.sub(pattern, repl, k)
        out[k] = v
    if not out:
        raise CheckpointMismatchError(f'No parameter in the checkpoint starts with prefix {prefix!r}.')
    return out


def guess_arch(state_dict):
    """The variant name whose shapes match an official-layout state dict, or None."""
    try:
        conv_stem = 'patch_embed.5.weight' in state_dict
        dims = state_dict['patch_embed.5.weight' if conv_stem else 'patch_embed.0.weight'].shape[0]
        depths = tuple(1 + max((int(m.group(1)) for k in state_dict
                                if (m := re.match(rf'layers\.{i}\.blocks\.(\d+)\.', k))), default=-1)
                       for i in range(4))
        a_log = state_dict['layers.0.blocks.0.op.A_logs']
        d_state, ssm_ratio = a_log.shape[1], a_log.shape[0] / 4 / dims
    except (KeyError, IndexError):
        return None
    for name, s in ARCH_SETTINGS.items():
        if (s['dims'], tuple(s['depths']), s['d_state'], s['ssm_ratio'], s['stem'] == 'conv') == \
                (dims, depths, d_state, ssm_ratio, conv_stem):
            return name
    return None


def strip_module(state_dict):
    """Drop DDP's ``module.`` prefix, as mmengine's Runner does before loading."""
    return {(k[len('module.'):] if k.startswith('module.') else k): v for k, v in state_dict.items()}


class StateDictFit:
    """How ``state_dict`` differs from ``model``'s: missing, unexpected and mis-shaped keys.

    The one comparison behind every "does not fit" message (the backbone's loaders, the classification
    checkpoint hook, the tools' strict loading); keys under ``may_miss`` / ``may_ignore`` prefixes may be
    missing from / unexpected in the checkpoint.
    """

    def __init__(self, model, state_dict, may_miss=(), may_ignore=()):
        own = model.state_dict()
        self.missing = [k for k in own if k not in state_dict and not any(k.startswith(p) for p in may_miss)]
        self.unexpected = [k for k in state_dict
                           if k not in own and not any(k.startswith(p) for p in may_ignore)]
        self.mis_shaped = [(k, tuple(state_dict[k].shape), tuple(own[k].shape)) for k in state_dict
                           if k in own and hasattr(state_dict[k], 'shape')
                           and tuple(state_dict[k].shape) != tuple(own[k].shape)]

    def __bool__(self):
        """True when the state dict fits exactly."""
        return not (self.missing or self.unexpected or self.mis_shaped)

    def problems(self, what='checkpoint', shown=6, counted=False):
        """One line per kind of difference, at most ``shown`` keys each.

        ``counted``: ``'3 missing keys: ...'`` (for a one-line message), else ``'missing: ...'``."""
        shapes = [f'{k}: {c} in the {what}, {m} in the model' for k, c, m in self.mis_shaped]
        titles = (('missing keys', 'unexpected keys', 'mis-shaped keys') if counted
                  else ('missing', 'unexpected', 'shape mismatches'))
        lines = []
        for title, items in zip(titles, (self.missing, self.unexpected, shapes)):
            if items:
                more = f', ... ({len(items)} in all)' if len(items) > shown else ''
                lines.append(f'{len(items)} {title}: ' if counted else f'{title}: ')
                lines[-1] += ', '.join(items[:shown]) + more
        return lines


def check_state_dict_fits(model, state_dict, what='checkpoint', may_miss=(), may_ignore=()):
    """Raise :class:`CheckpointMismatchError` unless ``state_dict`` has exactly ``model``'s keys and shapes.

    ``model`` is a VMamba network (with ``arch_name``) or a model holding one as ``backbone``; when the
    weights look like another published variant, the message names it.
    """
    fit = StateDictFit(model, state_dict, may_miss, may_ignore)
    if fit:
        return
    backbone = getattr(model, 'backbone', None)
    if backbone is not None and hasattr(backbone, 'arch_name'):
        arch, where = backbone.arch_name, f'this {type(model).__name__} (backbone arch {backbone.arch_name!r})'
        trunk = {k[len('backbone.'):]: v for k, v in state_dict.items() if k.startswith('backbone.')}
        setting = 'model.backbone.arch'
    else:
        arch = getattr(model, 'arch_name', '?')
        where, trunk, setting = f'VMamba arch {arch!r}', state_dict, 'arch'
    lines = [f'The {what} does not fit {where}.']
    guessed = guess_arch(trunk) if trunk else None
    if guessed and guessed != arch:
        lines.append(f'It looks like a {guessed!r} checkpoint: build the model with {setting}={guessed!r}, '
                     f'or use the checkpoint of {arch!r}.')
    lines += [f'  {line}' for line in fit.problems(what)]
    raise CheckpointMismatchError('\n'.join(lines))


def load_official_weights(model, checkpoint, key=None, prefix=None, trust=None):
    """Load an official classification checkpoint (path or loaded dict) into a :class:`VSSM`, strictly.

    ``trust=True`` loads a file that needs a full unpickle (see :func:`load_checkpoint_file`)."""
    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint_file(checkpoint, trust=trust)
    state_dict = convert_official_keys(extract_state_dict(checkpoint, key), prefix)
    check_state_dict_fits(model, state_dict)
    model.load_state_dict(state_dict, strict=True)
    return model


def load_pretrained(backbone, checkpoint, key=None, prefix=None, trust=None):
    """Load a checkpoint into a :class:`VMamba` backbone.

    The official classifier (``classifier.*``) is dropped; output norms (``outnorm*``) that the file lacks
    keep their fresh initialisation; every other difference raises. ``trust`` as in
    :func:`load_checkpoint_file`.
    """
    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint_file(checkpoint, trust=trust)
    state_dict = convert_official_keys(extract_state_dict(checkpoint, key), prefix)
    own = backbone.state_dict()
    state_dict = {k: v for k, v in state_dict.items()
                  if not k.startswith('classifier.') and (k in own or not k.startswith('outnorm'))}
    check_state_dict_fits(backbone, state_dict, may_miss=('outnorm',))
    backbone.load_state_dict(state_dict, strict=False)
    return backbone
