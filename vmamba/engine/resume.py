"""Which checkpoint ``--resume`` continues from, checked before anything is built.

mmengine's auto-resume reads ``last_checkpoint`` and trusts it: an empty pointer, a missing file or a
truncated one each end the run with a traceback, although an intact older checkpoint may sit beside it.
Here a candidate is only taken when it loads and holds what resuming needs (``meta`` with the epoch and
iteration, ``state_dict``, ``optimizer``, ``message_hub``). ``--resume`` alone tries the file the pointer
names, then every other checkpoint of the work dir, newest first, and says in one line for each file it
skipped why; ``--resume PATH`` takes PATH or stops with the reason. A file that the safe loader refuses
(it would run code to load) stops the run instead of being skipped, naming the opt-in.

The checkpoint's random seed is also put into the config, so that the resumed run builds its data sampler
with the seed of the interrupted one even where the config leaves the seed to chance.
"""
import glob
import os.path as osp
import re
import sys

from vmamba.models.checkpoint import CheckpointReadError, CheckpointRefusedError, load_checkpoint_file

from .checkpointing import TMP_SUFFIX
from vmamba.errors import ToolError

__all__ = ['RESUME_KEYS', 'checkpoint_problem', 'find_resumable', 'check_resume']

#: What a checkpoint needs for an exact resume.
RESUME_KEYS = ('meta', 'state_dict', 'optimizer', 'message_hub')


def checkpoint_problem(path):
    """``(None, checkpoint)`` if ``path`` can be resumed from, else ``(reason, None)``."""
    if not osp.isfile(path):
        return 'the file does not exist', None
    try:
        ckpt = load_checkpoint_file(path)
    except CheckpointRefusedError:
        raise  # never skipped quietly: the user decides whether to trust it
    except CheckpointReadError as err:
        return err.reason, None
    if not isinstance(ckpt, dict):
        return f'it holds a {type(ckpt).__name__}, not a training checkpoint', None
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    if missing:
        return (f'it has no {", ".join(missing)} (not a training checkpoint of tools/train.py; start from its '
                'weights with --cfg-options load_from=PATH instead)'), None
    meta = ckpt['meta']
    if not isinstance(meta, dict) or 'iter' not in meta or 'epoch' not in meta:
        return 'its meta holds no epoch/iteration', None
    return None, ckpt


def _step(path):
    found = re.findall(r'(\d+)', osp.basename(path))
    return int(found[-1]) if found else -1


def _candidates(work_dir):
    """The pointer's target first, then every other ``*.pth`` of the work dir, newest first."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    named, notes = None, []
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if not named:
            notes.append(f'{pointer} is empty')
    files = [p for p in glob.glob(osp.join(work_dir, '*.pth'))
             if not p.endswith(TMP_SUFFIX) and not osp.basename(p).startswith(('best_', '.'))]
    files.sort(key=lambda p: (osp.getmtime(p), _step(p)), reverse=True)
    if named:
        files = [named] + [p for p in files if osp.abspath(p) != osp.abspath(named)]
    return files, notes


def find_resumable(work_dir, log=None):
    """The newest checkpoint of ``work_dir`` that can be resumed from, or None if it has none.

    ``log`` (default: print to stderr) gets one line per skipped file. Raises :class:`ToolError` when
    the work dir has checkpoints but none of them is intact.
    """
    log = log or (lambda line: print(line, file=sys.stderr))
    files, notes = _candidates(work_dir)
    for note in notes:
        log(f'--resume: {note}; looking for the newest intact checkpoint in {work_dir}.')
    skipped = []
    for path in files:
        reason, ckpt = checkpoint_problem(path)
        if reason is None:
            return path, ckpt
        skipped.append(f'{path} ({reason})')
        log(f'--resume: skipped {path}: {reason}.')
    if skipped:
        raise ToolError(f'--resume: no intact checkpoint in {work_dir}; skipped {"; ".join(skipped)}. '
                        'Pass a good one with --resume PATH, or remove the work dir to start afresh.')
    return None, None


def check_resume(cfg, log=None):
    """Resolve and check ``--resume`` (``cfg.resume``/``cfg.load_from`` as set by ``apply_resume``); returns
    the checkpoint it resumes from (None for a fresh start or a remote file)."""
    if not cfg.get('resume'):
        return None
    log = log or (lambda line: print(line, file=sys.stderr))
    if cfg.get('load_from'):
        if '://' in str(cfg.load_from):
            return None
        reason, ckpt = checkpoint_problem(cfg.load_from)
        if reason:
            raise ToolError(f'--resume {cfg.load_from}: cannot resume from it: {reason}.')
    else:
        path, ckpt = find_resumable(cfg.work_dir, log)
        if path is None:
            log(f'--resume: no checkpoint in {cfg.work_dir} yet; training from the start.')
            cfg.resume = False
            return None
        log(f'--resume: continuing from {path} (iteration {ckpt["meta"]["iter"]}).')
        cfg.load_from = path
    seed = ckpt['meta'].get('seed')
    if seed is not None:
        randomness = cfg.get('randomness') or {}
        randomness['seed'] = seed
        cfg.randomness = randomness
    return ckpt
