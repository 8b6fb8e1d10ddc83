"""A resumed run whose config differs from the checkpoint's run: listed, stopped, or applied on request.

mmengine resumes whatever the config says, and silently prefers the checkpoint for part of it: the
optimizer's learning rate and the schedulers' parameters come back from the checkpoint, the seed too. So a
run resumed with a changed learning rate trains with the old one, and one resumed with another batch size,
world size or model continues, but not the run it claims to continue. :func:`check_changes` compares what
makes a resume exact (the optimizer, the schedulers, the batch size per GPU, the world size, the model and
the seed) with the config the checkpoint was written under (``meta['cfg']``; the world size is added to
``meta`` by :class:`ResumeChangesHook`) and lists every difference in one block. Without
``--resume-changed`` it stops the run; with it the run uses the new config: the hook puts the config's
learning rates and scheduler parameters back after mmengine's resume (the current learning rate is scaled
by new base / old base). The seed is the exception: the checkpoint's seed always wins, so that the data
order continues where it stopped (the block says so). A model whose parameters changed shape stops even
then, at the checkpoint loading (it does not fit).
"""
import os

from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from vmamba.errors import ToolError

__all__ = ['config_differences', 'check_changes', 'ResumeChangesHook', 'add_resume_changes_hook']

#: (label, config key) compared between the checkpoint's run and this one.
COMPARED = (('optimizer', 'optim_wrapper.optimizer'), ('schedule', 'param_scheduler'),
            ('batch size per GPU', 'train_dataloader.batch_size'), ('model', 'model'))
#: Scheduler attributes that are its progress, not its configuration.
_PROGRESS = ('last_step', '_global_step', '_last_value', 'base_values', 'optimizer')


def _get(cfg, dotted):
    node = cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg
    for part in dotted.split('.'):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _plain(node):
    """Config values as plain dicts/lists (tuples as lists: the dumped text may write either)."""
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_plain(v) for v in node]
    return node


def _flat(node, where):
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_flat(v, f'{where}.{k}'))
        return out or {where: {}}
    if isinstance(node, list):
        out = {}
        for i, v in enumerate(node):
            out.update(_flat(v, f'{where}[{i}]'))
        return out or {where: []}
    return {where: node}


def _world_size(cfg):
    if cfg.get('launcher', 'none') == 'none':
        return 1
    for key in ('WORLD_SIZE', 'SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE'):
        if os.environ.get(key):
            return int(os.environ[key])
    return None


def config_differences(cfg, ckpt, seed=None):
    """``[(key, checkpoint's value, this run's value)]`` for each compared entry that differs.

    ``seed`` is this config's own seed (``check_resume`` replaces the config's with the checkpoint's)."""
    from mmengine.config import Config
    meta = ckpt.get('meta') or {}
    text = meta.get('cfg')
    diffs = []
    if text:
        try:
            old = Config.fromstring(text, '.py')
        except Exception as err:  # an unreadable dump: nothing to compare it with
            return [('config', f'unreadable ({type(err).__name__})', 'not compared')]
        for _, key in COMPARED:
            a, b = _flat(_plain(_get(old, key)), key), _flat(_plain(_get(cfg, key)), key)
            for k in sorted(set(a) | set(b), key=lambda k: (k not in a, k)):
                if a.get(k, '<absent>') != b.get(k, '<absent>'):
                    diffs.append((k, a.get(k, '<absent>'), b.get(k, '<absent>')))
    world = _world_size(cfg)
    if meta.get('world_size') is not None and world is not None and meta['world_size'] != world:
        diffs.append(('world size', meta['world_size'], world))
    if seed is not None and meta.get('seed') is not None and meta['seed'] != seed:
        diffs.append(('randomness.seed', meta['seed'], seed))
    return diffs


def check_changes(cfg, ckpt, path, seed=None, accept=False, log=print):
    """Stop (a :class:`ToolError` listing every difference) unless ``accept``; then log the block."""
    diffs = config_differences(cfg, ckpt, seed)
    if not diffs:
        return []
    lines = [f'  {k}: {a!r} in the checkpoint, {b!r} now'
             + (' (the checkpoint\'s seed is kept: the data order continues)' if k == 'randomness.seed' else '')
             for k, a, b in diffs]
    if not accept:
        raise ToolError(f'--resume: this config differs from the one {path} was trained with, so the run would '
                        'not continue it exactly:\n' + '\n'.join(lines) +
                        '\nRestore those values, or pass --resume-changed to continue with the new ones.')
    log('--resume-changed: continuing with this config\'s values where it differs from the checkpoint\'s run:\n'
        + '\n'.join(lines))
    return diffs


def _groups(runner):
    return getattr(runner.optim_wrapper, 'param_groups', None) or []


def _schedulers(runner):
    scheds = runner.param_schedulers or []
    if isinstance(scheds, dict):
        return [s for group in scheds.values() for s in group]
    return list(scheds)


@HOOKS.register_module()
class ResumeChangesHook(Hook):
    """Writes the world size into each checkpoint's meta; with ``apply=True`` a resumed run gets the
    config's learning rates and scheduler parameters back after mmengine restored the checkpoint's."""

    priority = 'VERY_HIGH'

    def __init__(self, apply=False):
        self.apply = apply
        self._fresh = None

    def before_save_checkpoint(self, runner, checkpoint):
        checkpoint.setdefault('meta', {})['world_size'] = get_world_size()

    def before_run(self, runner):
        # Runs after the optimizer and schedulers are built from the config, before the resume.
        if not self.apply or not hasattr(runner, 'optim_wrapper') or isinstance(runner.optim_wrapper, dict):
            return
        self._fresh = ([g.get('initial_lr', g['lr']) for g in _groups(runner)],
                       [{k: v for k, v in s.state_dict().items() if k not in _PROGRESS}
                        for s in _schedulers(runner)],
                       [list(s.base_values) for s in _schedulers(runner)])

    def before_train(self, runner):
        if self._fresh is None or not runner.cfg.get('resume'):
            return
        initial, settings, bases = self._fresh
        for group, new in zip(_groups(runner), initial):
            old = group.get('initial_lr', new)
            if old:
                group['lr'] = group['lr'] * new / old
            group['initial_lr'] = new
        for sched, own, base in zip(_schedulers(runner), settings, bases):
            sched.__dict__.update(own)
            sched.base_values = base
            sched._last_value = [g[sched.param_name] for g in sched.optimizer.param_groups]
        self._fresh = None


def add_resume_changes_hook(cfg, apply=False):
    """Add :class:`ResumeChangesHook` to the config's ``custom_hooks`` (once)."""
    hooks = [h for h in (cfg.get('custom_hooks') or []) if h.get('type') not in ('ResumeChangesHook',
                                                                                 ResumeChangesHook)]
    hooks.append(dict(type='ResumeChangesHook', apply=bool(apply)))
    cfg.custom_hooks = hooks
