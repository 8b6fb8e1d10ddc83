"""Checkpoint files for the loading tests: a malicious pickle, an official-format file whose config is a
yacs-like ``CfgNode`` (made without yacs installed), and a local HTTP server that serves a folder."""
import contextlib
import functools
import http.server
import os
import sys
import threading
import types

import torch


class _Payload:
    """The classic pickle payload: unpickling it calls ``os.system(command)``."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def malicious_file(path, marker, weights=None):
    """A ``torch.save`` file that looks like a checkpoint and creates ``marker`` when fully unpickled."""
    ckpt = {'state_dict': weights if weights is not None else {'w': torch.zeros(2)}, 'meta': {'epoch': 9, 'iter': 9},
            'optimizer': {}, 'message_hub': {}, 'payload': _Payload(f'touch {marker}')}
    torch.save(ckpt, str(path))
    return path


class _CfgNode(dict):
    """As yacs' ``CfgNode``: a dict subclass with its flags in ``__dict__`` and attribute access to keys."""

    def __init__(self, init=None):
        super().__init__()
        for key, value in (init or {}).items():
            self[key] = type(self)(value) if isinstance(value, dict) else value
        self.__dict__['__immutable__'] = False
        self.__dict__['__deprecated_keys__'] = set()
        self.__dict__['__renamed_keys__'] = {}
        self.__dict__['__new_allowed__'] = False

    def __getattr__(self, name):
        if name in self:
            return self[name]
        raise AttributeError(name)

    def freeze(self):
        self.__dict__['__immutable__'] = True
        for value in self.values():
            if isinstance(value, _CfgNode):
                value.freeze()


OFFICIAL_CONFIG = {'MODEL': {'TYPE': 'vssm', 'NAME': 'vssm1_tiny_0230s', 'DROP_PATH_RATE': 0.2,
                             'VSSM': {'DEPTHS': [2, 2, 8, 2], 'EMBED_DIM': 96}},
                   'TRAIN': {'EPOCHS': 300, 'BASE_LR': 0.001}, 'TAG': 'default'}


@contextlib.contextmanager
def _yacs_config_module():
    """A module named ``yacs.config`` holding ``CfgNode``, in ``sys.modules`` only inside the block."""
    saved = {name: sys.modules.get(name) for name in ('yacs', 'yacs.config')}
    package, module = types.ModuleType('yacs'), types.ModuleType('yacs.config')
    cls = type('CfgNode', (_CfgNode,), {'__module__': 'yacs.config', '__qualname__': 'CfgNode'})
    module.CfgNode, package.config = cls, module
    sys.modules.update({'yacs': package, 'yacs.config': module})
    try:
        yield cls
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


def official_file(path, model_state, ema_state=None, **extra):
    """An official VMamba classification file (as the official trainer saves it) at ``path``.

    Its ``config`` is pickled as a ``yacs.config.CfgNode``; the module exists only while saving. Without
    ``ema_state`` the file has no ``model_ema`` (as vanilla-tiny's)."""
    with _yacs_config_module() as cfg_node:
        config = cfg_node(OFFICIAL_CONFIG)
        config.freeze()
        ckpt = {'model': model_state, **({} if ema_state is None else {'model_ema': ema_state}),
                'optimizer': {'state': {}, 'param_groups': [{'lr': 1e-3, 'params': [0, 1]}]},
                'lr_scheduler': {'t_initial': 300, 'warmup_t': 20, 'noise_range_t': None},
                'max_accuracy': 82.6, 'epoch': 262, 'config': config}
        ckpt.update(extra)
        torch.save(ckpt, str(path))
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(folder, timeout=60):
    """Serve ``folder`` on 127.0.0.1 from a thread; yields the base URL. The server stops at the block's end
    (or after ``timeout`` seconds, whichever comes first)."""
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
                                             functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs=dict(poll_interval=0.1), daemon=True)
    timer = threading.Timer(timeout, server.shutdown)
    thread.start()
    timer.start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}'
    finally:
        timer.cancel()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
