"""Loading official VMamba checkpoints, loudly.

Official classification files are dicts ``{'model', 'model_ema', 'optimizer', 'config', ...}`` whose
``config`` is a pickled yacs object, so they need a full (non ``weights_only``) unpickle, and the yacs
class may not even be importable here. :func:`load_checkpoint_file` tries the safe loader first and falls
back to a lenient unpickler that replaces classes it cannot import by inert placeholders; tensors are
unaffected. Only load files you trust: a full unpickle can run code.

Every mismatch between a checkpoint and a model raises :class:`CheckpointMismatchError` with the
missing/unexpected/mis-shaped keys and, when the file looks like another variant, its name.
"""
import os
import pickle
import re
import zipfile

import torch

from .variants import ARCH_SETTINGS

__all__ = ['CheckpointMismatchError', 'CheckpointReadError', 'unreadable_reason', 'load_checkpoint_file', 'extract_state_dict', 'convert_official_keys',
           'guess_arch', 'load_official_weights', 'load_pretrained']


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's parameters do not fit the model."""


class CheckpointReadError(ValueError):
    """A file that cannot be read as a checkpoint (truncated, still being written, or not a PyTorch file).

    ``reason`` holds the diagnosis alone (e.g. ``'it is empty (0 bytes)'``)."""

    def __init__(self, message, reason=None):
        super().__init__(message)
        self.reason = reason or message


def _read_error(path, reason, advice='Download/copy it again.'):
    return CheckpointReadError(f'Cannot read the checkpoint {path}: {reason}. {advice}', reason)


def unreadable_reason(path):
    """Why ``path`` cannot be a complete PyTorch checkpoint, from its bytes alone; None if it may be one.

    ``torch.save`` writes a zip archive (whose directory sits at the very end, so a truncated file has
    none) or, with the legacy format, a pickle stream (first byte 0x80).
    """
    size = os.path.getsize(path)
    if size == 0:
        return 'it is empty (0 bytes)'
    with open(path, 'rb') as f:
        head = f.read(4)
    if head.startswith(b'PK'):
        if not zipfile.is_zipfile(path):
            return f'it is truncated ({size} bytes, the end of its zip archive is missing)'
        return None
    if head[:1] == b'\x80':
        return None
    kind = 'text' if all(32 <= b < 127 or b in (9, 10, 13) for b in head) else 'binary data'
    return f'it is not a PyTorch checkpoint (it starts with {kind} {head!r}, not a zip archive or pickle)'


class _Placeholder:
    """Stands in for a pickled object whose class cannot be imported (e.g. a yacs ``CfgNode``)."""

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):  # dict subclasses are rebuilt with SETITEMS
        self.__dict__.setdefault('items', {})[key] = value


class _LenientUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_Placeholder,), {'__module__': module})


class _LenientPickle:
    """A ``pickle_module`` for :func:`torch.load` with a forgiving ``find_class``."""
    Unpickler = _LenientUnpickler
    load = staticmethod(lambda f, **kw: _LenientUnpickler(f, **kw).load())
    __name__ = 'vmamba_lenient_pickle'


def load_checkpoint_file(path, map_location='cpu'):
    """Load any checkpoint file (official VMamba, mmengine, plain state_dict) on ``map_location``."""
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'Checkpoint file not found: {path!r}. Download the official weights (see README, "Checkpoints") '
            'into checkpoints/, or point the config at your file, e.g. '
            '--cfg-options model.backbone.init_cfg.checkpoint=PATH.')
    reason = unreadable_reason(path)
    if reason:
        raise _read_error(path, reason, 'Point at a complete checkpoint (a file written by torch.save), '
                                        'or download/copy it again.')
    try:
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except (pickle.UnpicklingError, ImportError):
            # Official files hold a pickled config object (whose module, yacs, may be absent) and mmengine
            # checkpoints hold its message hub: both need a full unpickle (trusted files only).
            return torch.load(path, map_location=map_location, weights_only=False,
                              pickle_module=_LenientPickle)
    except (EOFError, IndexError, KeyError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError) as err:
        # Damage inside an archive whose directory is intact (or a pickle cut short).
        raise _read_error(path, f'it is damaged ({type(err).__name__}: {err})') from err
    except RuntimeError as err:
        if 'PytorchStreamReader' not in str(err) and 'zip archive' not in str(err):
            raise
        raise _read_error(path, f'it is damaged ({str(err).splitlines()[0]})') from err


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


def _check_fit(model, state_dict, may_miss=(), may_ignore=()):
    """Raise CheckpointMismatchError unless ``state_dict`` fits ``model`` (up to the given key prefixes)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict and not any(k.startswith(p) for p in may_miss)]
    unexpected = [k for k in state_dict if k not in own and not any(k.startswith(p) for p in may_ignore)]
    shapes = [f'{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}'
              for k in state_dict if k in own and state_dict[k].shape != own[k].shape]
    if not (missing or unexpected or shapes):
        return
    lines = [f'The checkpoint does not fit VMamba arch {getattr(model, "arch_name", "?")!r}.']
    guessed = guess_arch(state_dict)
    if guessed and guessed != getattr(model, 'arch_name', None):
        lines.append(f'It looks like a {guessed!r} checkpoint: build the model with arch={guessed!r}, '
                     'or use the checkpoint of your variant.')
    for title, items in (('missing keys', missing), ('unexpected keys', unexpected), ('shape mismatches', shapes)):
        if items:
            shown = ', '.join(items[:8]) + (f', ... ({len(items)} in all)' if len(items) > 8 else '')
            lines.append(f'{title}: {shown}')
    raise CheckpointMismatchError('\n'.join(lines))


def load_official_weights(model, checkpoint, key=None, prefix=None):
    """Load an official classification checkpoint (path or loaded dict) into a :class:`VSSM`, strictly."""
    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint_file(checkpoint)
    state_dict = convert_official_keys(extract_state_dict(checkpoint, key), prefix)
    _check_fit(model, state_dict)
    model.load_state_dict(state_dict, strict=True)
    return model


def load_pretrained(backbone, checkpoint, key=None, prefix=None):
    """Load a checkpoint into a :class:`VMamba` backbone.

    The official classifier (``classifier.*``) is dropped; output norms (``outnorm*``) that the file lacks
    keep their fresh initialisation; every other difference raises.
    """
    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint_file(checkpoint)
    state_dict = convert_official_keys(extract_state_dict(checkpoint, key), prefix)
    own = backbone.state_dict()
    state_dict = {k: v for k, v in state_dict.items()
                  if not k.startswith('classifier.') and (k in own or not k.startswith('outnorm'))}
    _check_fit(backbone, state_dict, may_miss=('outnorm',))
    backbone.load_state_dict(state_dict, strict=False)
    return backbone
