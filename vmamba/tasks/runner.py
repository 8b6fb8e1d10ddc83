"""Building the mmengine ``Runner`` the tools run, with a config mistake reported as one message.

A wrong option (``model.backbone.archh=tiny``) or an unknown type only shows up while the Runner builds
its parts, as a long traceback from deep inside a registry; :func:`build_runner` turns those into a
:class:`~vmamba.errors.ToolError` naming the config key (see :func:`.config_check.explain_build_error`).
"""
from .config_check import explain_build_error

__all__ = ['build_runner']


def build_runner(cfg):
    """``Runner.from_cfg``, or the config's ``runner_type`` from the registry; a ``TypeError``/``KeyError``
    that is a config mistake is raised as a ToolError."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    try:
        if 'runner_type' in cfg:
            return RUNNERS.build(cfg)
        return Runner.from_cfg(cfg)
    except (TypeError, KeyError) as err:
        explained = explain_build_error(err, cfg)
        if explained is None:
            raise
        raise explained from err
