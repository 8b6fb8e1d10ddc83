"""The errors a user can fix, and how the tools report them: one line, ``error: ...``, exit status 1.

They live at the package root because every layer raises them: the model raises the checkpoint errors
without knowing about the tools, the engine and the task glue raise :class:`ToolError` (and subclasses:
non-finite loss, unreadable data file, checkpoint that does not fit ...), and the tools and the exporter
report them. This module imports nothing of vmamba, so anything may import it.

:data:`USER_ERRORS` are the exception types that carry such a message; anything else is a bug and keeps
its traceback. ``VMAMBA_TRACEBACK=1`` shows the traceback of the user errors too.
"""
import contextlib
import os
import sys

__all__ = ['ToolError', 'CheckpointMismatchError', 'CheckpointReadError', 'CheckpointRefusedError', 'USER_ERRORS',
           'user_message', 'reported']


class ToolError(RuntimeError):
    """A mistake the user can fix; the tools print the message and exit with status 1."""


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's parameters do not fit the model."""


class CheckpointReadError(ValueError):
    """A file that cannot be read as a checkpoint (truncated, still being written, or not a PyTorch file).

    ``reason`` holds the diagnosis alone (e.g. ``'it is empty (0 bytes)'``)."""

    def __init__(self, message, reason=None):
        super().__init__(message)
        self.reason = reason or message


class CheckpointRefusedError(CheckpointReadError):
    """A checkpoint that would run code or build objects outside the weights allowlist to load; refused
    unless the user vouches for it (``--trust-checkpoint``, ``trust=True``, ``VMAMBA_TRUST_CHECKPOINTS=1``).

    ``needs`` names the first global the file asked for (e.g. ``'posix.system'``)."""

    def __init__(self, message, reason=None, needs=None):
        super().__init__(message, reason)
        self.needs = needs


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
