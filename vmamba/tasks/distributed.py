"""``--launcher pytorch`` without CUDA: a gloo process group and CPU DDP.

mmengine's ``init_dist`` always calls ``torch.cuda.set_device`` and its DDP wrapper passes
``device_ids=[LOCAL_RANK]``; both fail on a CPU machine. We initialise a ``gloo`` process group before
the Runner exists (the Runner then sees ``is_distributed()`` and skips its own init) and wrap with
``device_ids=None``, the CPU form. With CUDA nothing changes: mmengine initialises NCCL itself.
"""
import os

import torch

from vmamba.errors import ToolError

__all__ = ['setup_distributed']


def setup_distributed(cfg):
    """Make ``--launcher pytorch`` work without CUDA (see the module docstring)."""
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return
    import torch.distributed as dist
    if launcher != 'pytorch':
        raise ToolError(f'--launcher {launcher} without CUDA is not supported; on a CPU machine launch with '
                        'torchrun (--launcher pytorch, e.g. tools/dist_train.sh).')
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT') if k not in os.environ]
    if missing:
        raise ToolError(f'--launcher pytorch expects the environment torchrun sets ({", ".join(missing)} missing). '
                        'Start it as: torchrun --nproc_per_node=N tools/train.py CONFIG --launcher pytorch')
    dist_cfg = cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    dist_cfg['backend'] = 'gloo'
    if not dist.is_initialized():
        import datetime
        kwargs = {}
        if dist_cfg.get('timeout') is not None:
            kwargs['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
        dist.init_process_group(backend='gloo', **kwargs)
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    if wrapper.get('type', 'MMDistributedDataParallel') in ('MMDistributedDataParallel',
                                                            'DistributedDataParallel'):
        wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
