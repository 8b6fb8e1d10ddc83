"""What the demo-set generators (:mod:`.coco`, :mod:`.shapes_cls`, :mod:`.imagenet`, :mod:`.ade20k`) share:
writing a set so that no reader ever sees half of it, recognising a set written earlier, and the command line.

Why in one place: a demo set is written on first use by the dataset that reads it, so several processes (DDP
ranks, data-loader workers) may ask for the same set at once, and a data root may hold real data that must
never be written over. The pattern that makes this safe - draw the set into a private temporary folder next
to the target, rename it into place in one step, accept a failed rename only when a concurrent writer left a
complete set, and record the settings so that a later call can tell "the same set" from "something else" -
is easy to get subtly wrong, so it is written once here. The generators keep only what is theirs: what they
draw, how they lay it out, and which settings make a set "the same".
"""
import argparse
import inspect
import json
import os
import os.path as osp
import shutil
import tempfile

__all__ = ['write_atomically', 'write_new_set', 'write_json', 'read_json', 'ensure_recorded', 'run_cli']


def write_atomically(root, prefix, write, *, replace=False, complete=None):
    """Build a set with ``write(staging)`` in a temporary folder next to ``root``, then rename it to ``root``.

    An empty folder at ``root`` is replaced; anything else at ``root`` only with ``replace``. When the rename
    fails, a set that a concurrent writer put at ``root`` meanwhile is accepted if ``complete(root)`` says it
    is whole; otherwise the error is raised. The temporary folder (prefix ``prefix``) never survives.
    Returns ``root``.
    """
    parent = osp.dirname(osp.abspath(root))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=prefix, dir=parent)
    try:
        write(staging)
        if replace and osp.exists(root):
            shutil.rmtree(root)
        elif osp.isdir(root) and not os.listdir(root):
            os.rmdir(root)
        try:
            os.rename(staging, root)  # atomic: readers see nothing or the complete set
        except OSError:
            if complete is None or not complete(root):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def write_new_set(root, writer, prefix, build, meta, record):
    """Write a set into ``root``, which must not exist yet: ``build(staging)`` draws the files, then ``record``
    is stored as JSON in ``meta`` (a path relative to the set), which also marks the set complete.

    ``writer`` names the caller in the error raised when ``root`` exists. Returns ``root``.
    """
    if osp.exists(root):
        raise FileExistsError(f'{root} already exists; {writer} writes a new folder only.')

    def write(staging):
        build(staging)
        write_json(osp.join(staging, meta), record)

    return write_atomically(root, prefix, write, complete=lambda found: osp.isfile(osp.join(found, meta)))


def write_json(path, record):
    """Store a set's settings record (its parent folder is created if needed)."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(record, f, indent=1)


def read_json(path):
    """A settings record stored by :func:`write_json`, or None when there is none."""
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def ensure_recorded(root, settings, defaults, generate, meta, what, ignore=('classes',), style=None):
    """Generate the set into ``root`` unless it is already there with the same settings; refuse anything else.

    ``settings`` override ``defaults`` (unknown keys are a TypeError); the comparison is with the record in
    ``root/meta`` less its ``ignore`` keys. With ``style``, a record of another drawing style (an older
    version of the generator) is refused too. ``what`` names the set in the errors. Returns ``root``.
    """
    unknown = set(settings) - set(defaults)
    if unknown:
        raise TypeError(f'unknown {what} settings {sorted(unknown)}; known: {sorted(defaults)}')
    settings = {**defaults, **settings}
    if not osp.exists(root):
        generate(root, **settings)
        return root
    found = read_json(osp.join(root, meta))
    if found is None:
        raise FileExistsError(f'{root} exists but is not a {what} folder (no {meta}); '
                              'remove it or choose another data_root.')
    for key in ignore:
        found.pop(key, None)
    if style is not None and found.pop('style', None) != style:
        raise FileExistsError(f'{root} holds a {what} set drawn by an older version of its generator; '
                              f'delete {root} to regenerate it.')
    if found != settings:
        raise FileExistsError(f'{root} holds a {what} set made with {found}, not {settings}; '
                              f'delete {root} to regenerate it.')
    return root


def run_cli(argv, *, description, default_root, generate, report=None, root_help='output folder',
            overwrite_help='replace an existing set', helps=None, metavars=None):
    """A generator's command line, read off ``generate``'s signature: ``root``, one ``--option`` per setting
    (an int, or a tuple of ints taking as many values) with the same default, and ``--overwrite`` when
    ``generate`` takes ``overwrite``.

    Calls ``generate(root, **settings[, overwrite=...])`` and prints ``report(returned root, settings)``
    (by default ``wrote ROOT: SETTINGS``).
    """
    helps, metavars = helps or {}, metavars or {}
    parameters = inspect.signature(generate).parameters
    defaults = {k: p.default for k, p in parameters.items() if k not in ('root', 'overwrite')}
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('root', nargs='?', default=default_root, help=root_help)
    for key, value in defaults.items():
        extra = dict(nargs=len(value)) if isinstance(value, tuple) else {}
        if key in metavars:
            extra['metavar'] = metavars[key]
        parser.add_argument(f'--{key.replace("_", "-")}', type=int, default=value, help=helps.get(key), **extra)
    if 'overwrite' in parameters:
        parser.add_argument('--overwrite', action='store_true', help=overwrite_help)
    args = parser.parse_args(argv)
    settings = {k: tuple(getattr(args, k)) if isinstance(v, tuple) else getattr(args, k) for k, v in defaults.items()}
    options = dict(overwrite=args.overwrite) if 'overwrite' in parameters else {}
    root = generate(args.root, **settings, **options)
    print(report(root, settings) if report else f'wrote {root}: {settings}')
    return root
