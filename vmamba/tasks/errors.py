"""How the tools report a mistake the user can fix: one line, ``error: ...``, exit status 1, no traceback.

:data:`USER_ERRORS` are the exception types that carry such a message: :class:`~vmamba.tasks.common.ToolError`
(and its subclasses: non-finite loss, unreadable data file, checkpoint that does not fit ...) and the
checkpoint errors of :mod:`vmamba.models.checkpoint`, which the model raises without knowing about the
tools. Anything else is a bug and keeps its traceback. ``VMAMBA_TRACEBACK=1`` shows the traceback of the
user errors too.
"""
import contextlib
import os
import sys

from vmamba.models.checkpoint import CheckpointMismatchError, CheckpointReadError

from .common import ToolError

__all__ = ['USER_ERRORS', 'user_message', 'reported']

USER_ERRORS = (ToolError, CheckpointReadError, CheckpointMismatchError)


def user_message(err):
    """The message of ``err``; for an error re-raised from a DataLoader worker, without torch's traceback."""
    text = str(err.args[0]) if err.args else str(err)
    if 'Original Traceback' in text:  # torch's ExceptionWrapper: "Caught X in DataLoader worker ... X: msg"
        last = text.strip().splitlines()[-1]
        prefix = f'{type(err).__name__}: '
        text = last[last.index(prefix) + len(prefix):] if prefix in last else last
    return text


@contextlib.contextmanager
def reported():
    """Turn a :data:`USER_ERRORS` exception into ``sys.exit('error: ...')``."""
    try:
        yield
    except USER_ERRORS as err:
        if os.environ.get('VMAMBA_TRACEBACK') == '1':
            raise
        sys.exit(f'error: {user_message(err)}')
