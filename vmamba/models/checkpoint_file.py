"""Reading checkpoint files without running code from them: the one loader behind every path.

A ``.pth`` is a pickle, and a full unpickle calls whatever the file names (``os.system`` included). Every
checkpoint this project reads (``load_official_weights``, ``init_cfg`` Pretrained, ``load_from``,
``--resume`` and its checks, the converter, the exporter, the analysis tools, URLs through mmengine) goes
through :func:`load_checkpoint_file`, which uses torch's ``weights_only`` unpickler with an explicit
allowlist of exactly what legitimate files hold, and refuses anything else with
:class:`~vmamba.errors.CheckpointRefusedError` before any of it runs.

How the allowlist was derived: the demo configs of the three tasks (detection, segmentation and
classification with its EMA hook, epoch- and iteration-based) were trained for 1-2 iterations with
``tools/train.py`` and ``torch.serialization.get_unsafe_globals_in_checkpoint`` was run on the
checkpoints. Beyond what torch admits itself (tensors, containers, ``_codecs.encode``), they hold
mmengine's ``HistoryBuffer`` (the message hub), numpy arrays, dtypes and scalars (logged values, the
best score), and ``builtins.getattr``, with which pickle names ``HistoryBuffer.min/max/current/mean``
(the buffer's statistics methods). Optimizer, scheduler, EMA and AMP-scaler states are plain containers.
The official VMamba classification files add one class, their yacs ``CfgNode`` config.

What is admitted, and how:

* ``mmengine.logging.history_buffer.HistoryBuffer`` (when mmengine is installed), numpy's
  ``ndarray``/``dtype``/``_reconstruct``/``scalar`` (also under numpy 1's ``numpy.core`` names) and the
  dtype classes (``numpy.dtypes.Float64DType`` ...), whose state a pickled dtype restores (BUILD);
* ``builtins.getattr`` only as :func:`_statistics_method`, which returns a ``HistoryBuffer`` statistics
  method and refuses anything else;
* ``yacs.config.CfgNode`` as :class:`_InertConfig`, without importing yacs: torch's unpickler rebuilds a
  pickled dict subclass with NEWOBJ (``cls.__new__``), SETITEMS (allowed only on a plain dict or
  ``OrderedDict``) and BUILD (``__dict__.update`` of the yacs flags on an ``OrderedDict``), so the stand-in's
  ``__new__`` returns an empty ``OrderedDict``: the config comes back as nested ``OrderedDict`` mappings
  and nothing but dict filling and attribute setting happens.

To admit another class that your files hold, add it to :func:`allowed_globals` (as ``obj`` or
``(stand_in, 'module.Name')``) after checking with ``get_unsafe_globals_in_checkpoint`` what the files
name and that rebuilding it (``__new__``, ``__setstate__``) runs nothing else. For a file you vouch for
there is an opt-in to a full unpickle: ``trust=True``, ``--trust-checkpoint`` on the tools, or
``VMAMBA_TRUST_CHECKPOINTS=1`` for configs run by other tools; each use prints a one-line warning.

``.safetensors`` files (written by ``tools/convert_checkpoint.py``) hold tensors only and load as a plain
state dict through the same function.
"""
import argparse
import collections
import json
import os
import pickle
import re
import struct
import sys
import urllib.parse
import zipfile

import torch

from vmamba.errors import CheckpointReadError, CheckpointRefusedError

__all__ = ['TRUST_ENV', 'SAFETENSORS_SUFFIX', 'allowed_globals', 'trusted_by_environment', 'add_trust_option',
           'unreadable_reason', 'load_checkpoint_file', 'load_url', 'save_safetensors', 'safetensors_metadata']

#: Set to 1 to load checkpoints with a full unpickle (files you trust only); the tools' --trust-checkpoint.
TRUST_ENV = 'VMAMBA_TRUST_CHECKPOINTS'
SAFETENSORS_SUFFIX = '.safetensors'
_OPT_IN = f'--trust-checkpoint (tools), trust=True (Python) or {TRUST_ENV}=1'


class _InertConfig:
    """Stands in for yacs' ``CfgNode`` (a dict subclass): rebuilt as an ``OrderedDict``, see the module doc."""

    def __new__(cls, *args, **kwargs):
        return collections.OrderedDict()


_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer():
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
    except ImportError:  # mmengine is optional for the bare model
        return None
    return HistoryBuffer


def _statistics_method(owner, name):
    """``builtins.getattr`` as admitted: only a ``HistoryBuffer`` statistics method (how pickle names them)."""
    buffer = _history_buffer()
    registered = getattr(buffer, '_statistics_methods', {}) if buffer is not None else {}
    if buffer is None or owner is not buffer or name not in (*_HISTORY_BUFFER_STATISTICS, *registered):
        # Phrased as torch's own refusal, so that the file's first unsafe global is reported the same way.
        raise pickle.UnpicklingError(f'Unsupported global: GLOBAL builtins.getattr({owner!r}, {name!r})')
    return registered.get(name) or getattr(buffer, name)


def _numpy_globals():
    try:
        import numpy as np
    except ImportError:
        return []
    core = getattr(np, '_core', None) or np.core
    reconstruct, scalar = core.multiarray._reconstruct, core.multiarray.scalar
    # The dtype classes (numpy.dtypes.Float64DType ...): torch's BUILD restores a dtype's state only for them.
    entries = [np.ndarray, np.dtype, *{type(np.dtype(code)) for code in np.typecodes['All']}]
    for package in ('numpy._core', 'numpy.core'):  # written by numpy 2 / numpy 1
        entries += [(reconstruct, f'{package}.multiarray._reconstruct'), (scalar, f'{package}.multiarray.scalar')]
    return entries


def allowed_globals():
    """What :func:`load_checkpoint_file` admits beyond torch's defaults (see the module docstring)."""
    entries = _numpy_globals() + [(_InertConfig, 'yacs.config.CfgNode'), (_statistics_method, 'builtins.getattr')]
    buffer = _history_buffer()
    if buffer is not None:
        entries.append(buffer)
    return entries


def trusted_by_environment():
    """True when ``VMAMBA_TRUST_CHECKPOINTS`` opts in to full unpickling (set by ``--trust-checkpoint``)."""
    return os.environ.get(TRUST_ENV, '').strip().lower() in ('1', 'true', 'yes')


class _TrustAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        os.environ[TRUST_ENV] = '1'  # read by every loader of this process, mmengine's included
        setattr(namespace, self.dest, True)


def add_trust_option(parser):
    """Add ``--trust-checkpoint`` to a tool's ``parser``: it sets ``VMAMBA_TRUST_CHECKPOINTS=1``."""
    parser.add_argument('--trust-checkpoint', action=_TrustAction, nargs=0, default=False,
                        help='load checkpoints that need a full unpickle (which can run code in the file): '
                             'only for files you trust')


def _read_error(path, reason, advice='Download/copy it again.'):
    return CheckpointReadError(f'Cannot read the checkpoint {path}: {reason}. {advice}', reason)


def _safetensors_reason(path, size):
    if size < 8:
        return f'it is truncated ({size} bytes, shorter than a safetensors header)'
    with open(path, 'rb') as f:
        header_size = struct.unpack('<Q', f.read(8))[0]
        first = f.read(1)
    if first != b'{':
        return 'it is not a safetensors file (no JSON header after the first 8 bytes)'
    if 8 + header_size > size:
        return f'it is truncated ({size} bytes, its header alone claims {header_size})'
    return None


def unreadable_reason(path):
    """Why ``path`` cannot be a complete checkpoint, from its bytes alone; None if it may be one.

    ``torch.save`` writes a zip archive (whose directory sits at the very end, so a truncated file has
    none) or, with the legacy format, a pickle stream (first byte 0x80); a ``.safetensors`` file starts
    with its header's length and the JSON header.
    """
    size = os.path.getsize(path)
    if size == 0:
        return 'it is empty (0 bytes)'
    if str(path).endswith(SAFETENSORS_SUFFIX):
        return _safetensors_reason(path, size)
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


def _refused_global(err):
    """The global named in a weights-only refusal, else None."""
    found = re.search(r'GLOBAL ([\w.]+(?:\([^)]*\))?)', str(err))
    return found.group(1) if found else None


def _weights_only_refusal(err):
    """``(needs, reason)`` when ``err`` is the weights-only unpickler refusing something, else None."""
    text = str(err)
    needs = _refused_global(err)
    if needs:
        return needs, f'it asks for {needs}, which is not on the allowlist of weights-only loading'
    if 'WeightsUnpickler error' in text:
        line = text.split('WeightsUnpickler error:', 1)[1].strip().splitlines()[0]
        return line, f'weights-only loading refuses it ({line})'
    return None


def _load_safetensors(path, map_location):
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        state = load_file(path, device='cpu')
    except (SafetensorError, OSError, ValueError) as err:
        raise _read_error(path, f'it is damaged ({type(err).__name__}: {err})') from err
    if isinstance(map_location, (str, torch.device)) and str(map_location) != 'cpu':
        state = {k: v.to(map_location) for k, v in state.items()}
    return state


def _full_unpickle(path, map_location, needs, name):
    print(f'warning: {name}: loading with a full unpickle, which runs whatever the file holds ({needs}); '
          'trusted by opt-in', file=sys.stderr, flush=True)
    return torch.load(path, map_location=map_location, weights_only=False)


def _load_torch_file(path, map_location, trust, name):
    try:
        try:
            with torch.serialization.safe_globals(allowed_globals()):
                return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as err:
            refusal = _weights_only_refusal(err)
            if refusal is None:
                raise
            needs, reason = refusal
            if trust:
                return _full_unpickle(path, map_location, needs, name)
            raise CheckpointRefusedError(
                f'Refused to load the checkpoint {name}: {reason}, and unpickling it could run code. '
                f'If you trust the file, opt in with {_OPT_IN}.', reason, needs) from None
    except (EOFError, IndexError, KeyError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError) as err:
        if isinstance(err, CheckpointReadError):
            raise
        # Damage inside an archive whose directory is intact (or a pickle cut short).
        raise _read_error(name, f'it is damaged ({type(err).__name__}: {err})') from err
    except RuntimeError as err:
        if 'PytorchStreamReader' not in str(err) and 'zip archive' not in str(err):
            raise
        raise _read_error(name, f'it is damaged ({str(err).splitlines()[0]})') from err


def load_checkpoint_file(path, map_location='cpu', trust=None, source=None):
    """Load a checkpoint file (official VMamba, mmengine, plain state dict, ``.safetensors``) safely.

    ``trust``: True loads a file the allowlist refuses with a full unpickle (a warning names the file);
    None (the default) takes that choice from ``VMAMBA_TRUST_CHECKPOINTS``. ``source`` names the file in
    messages (e.g. the URL it came from).
    """
    path = os.path.expanduser(str(path))
    name = source or path
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'Checkpoint file not found: {path!r}. Download the official weights (see README, "Checkpoints") '
            'into checkpoints/, or point the config at your file, e.g. '
            '--cfg-options model.backbone.init_cfg.checkpoint=PATH.')
    reason = unreadable_reason(path)
    if reason:
        raise _read_error(name, reason, 'Point at a complete checkpoint (a file written by torch.save or '
                                        'safetensors), or download/copy it again.')
    if path.endswith(SAFETENSORS_SUFFIX):
        return _load_safetensors(path, map_location)
    trust = trusted_by_environment() if trust is None else trust
    return _load_torch_file(path, map_location, trust, name)


def load_url(url, map_location='cpu', model_dir=None, progress=True, trust=None):
    """Download ``url`` into torch hub's checkpoint cache (once) and load it with :func:`load_checkpoint_file`."""
    model_dir = model_dir or os.path.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    filename = os.path.basename(urllib.parse.urlparse(url).path) or 'checkpoint.pth'
    cached = os.path.join(model_dir, filename)
    if not os.path.isfile(cached):
        torch.hub.download_url_to_file(url, cached, progress=progress)
    return load_checkpoint_file(cached, map_location, trust, source=f'{cached} (downloaded from {url})')


def save_safetensors(state_dict, path, metadata=None):
    """Write the tensors of ``state_dict`` to ``path`` as safetensors, atomically (temp file, then rename).

    ``metadata`` values are stored as strings. Shared storage is not allowed by the format, so each tensor
    is written as its own contiguous copy."""
    from safetensors.torch import save_file
    tensors = {k: v.detach().to('cpu').clone().contiguous() for k, v in state_dict.items()
               if isinstance(v, torch.Tensor)}
    folder, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f'.{base}.tmp')
    save_file(tensors, tmp, metadata={str(k): str(v) for k, v in (metadata or {}).items()})
    os.replace(tmp, path)


def safetensors_metadata(path):
    """The metadata dict of a ``.safetensors`` file (its JSON header's ``__metadata__``)."""
    with open(path, 'rb') as f:
        header_size = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(header_size))
    return header.get('__metadata__', {})
