"""The glue between the tools and the task codebases (mmdet, mmseg, mmpretrain).

* :mod:`.adapters`: what differs between the codebases, one row per task, and the one scope lookup;
* :mod:`.config_check`: loading a config and reporting its mistakes;
* :mod:`.config_transforms`: the command line folded into the config;
* :mod:`.data_checks`: missing data or pretrained weights, found before anything is built;
* :mod:`.distributed`: ``--launcher pytorch`` on a CPU machine;
* :mod:`.eval_options`: ``tools/test.py``'s ``--show``, ``--tta`` and ``--out``;
* :mod:`.runner`: building the Runner;
* :mod:`.classification`: mmpretrain hooks for official checkpoints and the EMA.

What keeps a run from losing work (checkpointing, resume, the NaN stop, strict loading) is in
:mod:`vmamba.engine`, the user errors in :mod:`vmamba.errors`. The names below, modules that used to live
here, still resolve (``from vmamba.tasks import errors, nan_guard``) for code written against them.
"""
import importlib

_MOVED = {
    'errors': 'vmamba.errors',
    'checkpointing': 'vmamba.engine.checkpointing',
    'exact_resume': 'vmamba.engine.exact_resume',
    'nan_guard': 'vmamba.engine.nan_guard',
    'resume': 'vmamba.engine.resume',
    'strict_loading': 'vmamba.engine.strict_loading',
}


def __getattr__(name):
    if name in _MOVED:
        return importlib.import_module(_MOVED[name])
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
