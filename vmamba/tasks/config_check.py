"""Config mistakes found before (or while) the Runner is built, each as one :class:`ToolError` message.

* :func:`load_config` and :func:`require`: a missing config file, a ``--cfg-options`` value that is text
  where the config has a number (:func:`check_option_values`), a ``default_scope`` none of the three
  task codebases has, a config without ``model``;
* :func:`explain_build_error`: an option the component does not take (``model.backbone.archh=tiny``) or a
  type no registry knows, turned from a 40-line traceback into the config key, what it may have meant and
  what to do (:func:`vmamba.tasks.runner.build_runner` applies it);
* :func:`fit_schedulers_to_run`: schedulers that would begin at or after the end of a shortened run
  (``train_cfg.max_epochs=1`` on a config whose cosine phase starts at epoch 1) are left out, with a note,
  instead of failing in mmengine with ``end should be larger than begin``.
"""
import difflib
import inspect
import os.path as osp
import re
import sys

from mmengine.config import Config

from vmamba.errors import ToolError

from .adapters import SUPPORTED_SCOPES, lookup

__all__ = ['SUPPORTED_SCOPES', 'load_config', 'check_option_values', 'require', 'explain_build_error',
           'fit_schedulers_to_run']


def load_config(path, options=None):
    """``Config.fromfile`` plus ``--cfg-options``; a missing file or an unsupported scope is a ToolError."""
    if not osp.isfile(path):
        raise ToolError(f'Config file not found: {path!r} (relative to the current directory). The configs '
                        'are under configs/{classification,detection,segmentation}/.')
    cfg = Config.fromfile(path)
    if options:
        check_option_values(cfg, options)
        cfg.merge_from_dict(options)
    scope = cfg.get('default_scope')
    if lookup(scope) is None:
        known = ', '.join(f'{s} ({t})' for s, t in SUPPORTED_SCOPES.items())
        found = f'default_scope={scope!r}' if scope else 'no default_scope'
        raise ToolError(f'{path} has {found}; these tools train and test configs of {known}. Inherit one of '
                        'the configs under configs/ (they set default_scope), or use that codebase\'s own tools.')
    return cfg


def _current(cfg, dotted):
    node = cfg
    for part in dotted.split('.'):
        if isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif hasattr(node, 'keys') and part in node:
            node = node[part]
        else:
            return None
    return node


def check_option_values(cfg, options):
    """A :class:`ToolError` for a ``--cfg-options`` value that is text where the config has a number or a
    flag (``optim_wrapper.optimizer.lr=1e-3x``): it would fail deep inside the run, or not at all."""
    for key, value in options.items():
        old = _current(cfg, key)
        if not isinstance(value, str) or old is None or isinstance(old, str):
            continue
        if isinstance(old, (bool, int, float)):
            kind = 'True or False' if isinstance(old, bool) else 'a number'
            raise ToolError(f'--cfg-options {key}={value}: the config has {kind} there ({old!r}), not text. '
                            f'Give {kind} (e.g. {key}={old!r}).')


def require(cfg, path, keys=('model',)):
    """A :class:`ToolError` unless the config defines each of ``keys``."""
    for key in keys:
        if not cfg.get(key):
            raise ToolError(f'{path} defines no {key!r}; a config for these tools needs one (inherit a config '
                            'under configs/ to get a complete one).')


def _find_key(node, key, where):
    """Dotted paths of dicts in ``node`` that hold ``key``."""
    found = []
    if isinstance(node, dict):
        if key in node:
            found.append(f'{where}.{key}')
        for k, v in node.items():
            found += _find_key(v, key, f'{where}.{k}')
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            found += _find_key(v, key, f'{where}[{i}]')
    return found


def _parameters(class_name, cfg):
    """Constructor parameter names of a registered class (model, optimizer, scheduler ...; empty if none)."""
    from mmengine import registry as registries
    for name in ('MODELS', 'OPTIMIZERS', 'PARAM_SCHEDULERS', 'HOOKS', 'DATASETS', 'TRANSFORMS'):
        try:
            with getattr(registries, name).switch_scope_and_registry(cfg.get('default_scope')) as registry:
                cls = registry.get(class_name)
            if cls is not None:
                return [p for p in inspect.signature(cls.__init__).parameters
                        if p not in ('self', 'args', 'kwargs')]
        except Exception:  # only for a suggestion
            continue
    return []


def explain_build_error(err, cfg):
    """A :class:`ToolError` for a config mistake behind ``err`` (raised building the Runner), else None."""
    text = str(err.args[0]) if err.args else str(err)
    if isinstance(err, TypeError):
        found = re.search(r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'", text)
        if found:
            cls, key = found.groups()
            where = ' or '.join(_find_key(cfg.to_dict(), key, 'cfg')) or key
            where = where.replace('cfg.', '')
            close = difflib.get_close_matches(key, _parameters(cls, cfg), n=3)
            hint = f' Did you mean {" or ".join(close)}?' if close else ''
            return ToolError(f'{where}: {cls} takes no argument {key!r}.{hint} Fix the config or the '
                             f'--cfg-options entry.')
        found = re.search(r"(\w+)\.__init__\(\) missing \d+ required positional arguments?: (.+)", text)
        if found:
            return ToolError(f'{found.group(1)} needs {found.group(2)}, which the config does not give. '
                             'Add it to the config (or with --cfg-options).')
    if isinstance(err, KeyError):
        found = re.match(r"(\S+) is not in the (\S+) registry", text)
        if found:
            name, registry = found.groups()
            return ToolError(f'Unknown type {name!r} (not in the {registry} registry). Check its spelling in '
                             'the config, and that custom_imports imports the module that registers it.')
    return None


def _run_length(train_cfg, by_epoch):
    iter_loop = train_cfg.get('type') in ('IterBasedTrainLoop', 'ExactIterBasedTrainLoop') or \
        train_cfg.get('by_epoch') is False
    if iter_loop:
        return None if by_epoch else train_cfg.get('max_iters')
    return train_cfg.get('max_epochs') if by_epoch else None


def fit_schedulers_to_run(cfg, log=None):
    """Leave out parameter schedulers that begin at or after the end of the run (see the module docstring)."""
    schedulers = cfg.get('param_scheduler')
    train_cfg = cfg.get('train_cfg')
    if not schedulers or not train_cfg:
        return
    log = log or (lambda line: print(line, file=sys.stderr))
    as_list = schedulers if isinstance(schedulers, (list, tuple)) else [schedulers]
    kept = []
    for i, sched in enumerate(as_list):
        length = _run_length(train_cfg, sched.get('by_epoch', True))
        begin = sched.get('begin', 0)
        if length is not None and begin >= length:
            unit = 'epoch' if sched.get('by_epoch', True) else 'iteration'
            log(f'note: param_scheduler[{i}] ({sched.get("type")}) begins at {unit} {begin}, when this '
                f'{length}-{unit} run is over; it is left out.')
            continue
        kept.append(sched)
    if len(kept) != len(as_list):
        cfg.param_scheduler = kept if kept else None
