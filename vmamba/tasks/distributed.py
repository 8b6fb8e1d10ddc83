"""Distributed start-up: the process group made before the Runner, a training-sized collective timeout, and
``--launcher pytorch`` without CUDA (a gloo group, CPU DDP, SyncBN as BN).

The group is made here for every launcher (with the arguments mmengine's Runner would use; the Runner then
sees it and skips its own), so that the work dir can be locked and checked on rank 0 before anything is
written there. mmengine's ``init_dist`` always calls ``torch.cuda.set_device`` and its DDP wrapper passes
``device_ids=[LOCAL_RANK]``; both fail on a CPU machine, which gets a ``gloo`` group and ``device_ids=None``.
torch's ``SyncBatchNorm`` only runs on GPUs, so on CPU the config's ``SyncBN`` layers become ``BN`` (with one
line saying so); the statistics are then per process.

The collective timeout (``--dist-timeout`` or ``env_cfg.dist_cfg.timeout``, default
:data:`DEFAULT_TIMEOUT_S`) bounds how long the ranks wait for one that stalls. Each rank posts the iteration
it is at to the group's store (:class:`StepBeaconHook`); when a collective times out,
:func:`explain_timeout` names the rank(s) behind and their iteration. A group that torchrun restarts meets
under store keys of its own attempt (:func:`_attempt_store`).
"""
import os

import datetime

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from vmamba.errors import ToolError

__all__ = ['DEFAULT_TIMEOUT_S', 'CollectiveTimeout', 'setup_distributed', 'finish_distributed', 'explain_timeout',
           'StepBeaconHook', 'add_step_beacon']

#: Default collective timeout: long enough for a rank-0 checkpoint write or evaluation, short enough that a
#: stalled rank does not hold the whole allocation for torch's default half hour.
DEFAULT_TIMEOUT_S = 1200


class CollectiveTimeout(ToolError):
    """A collective operation timed out: a rank stalled or died."""


def _replace_sync_bn(node):
    """Replace every ``SyncBN`` norm type in a model config by ``BN``; how many were replaced."""
    count = 0
    if isinstance(node, dict):
        if node.get('type') in ('SyncBN', 'MMSyncBN'):
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += _replace_sync_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += _replace_sync_bn(value)
    return count


def setup_distributed(cfg, timeout=None, log=None):
    """Make the process group (see the module docstring); ``timeout`` in seconds overrides the config's."""
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none':
        return
    import torch.distributed as dist
    log = log or (lambda line: print(line, flush=True))
    dist_cfg = cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    if timeout is not None:
        dist_cfg['timeout'] = timeout
    dist_cfg.setdefault('timeout', DEFAULT_TIMEOUT_S)
    if torch.cuda.is_available():
        if not dist.is_initialized():
            from mmengine.dist import init_dist
            store = _attempt_store(launcher, dist_cfg['timeout'])
            init_dist(launcher, **dist_cfg, **(store or {}))
        return
    if launcher != 'pytorch':
        raise ToolError(f'--launcher {launcher} without CUDA is not supported; on a CPU machine launch with '
                        'torchrun (--launcher pytorch, e.g. tools/dist_train.sh).')
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT') if k not in os.environ]
    if missing:
        raise ToolError(f'--launcher pytorch expects the environment torchrun sets ({", ".join(missing)} missing). '
                        'Start it as: torchrun --nproc_per_node=N tools/train.py CONFIG --launcher pytorch')
    dist_cfg['backend'] = 'gloo'
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo', timeout=datetime.timedelta(seconds=dist_cfg['timeout']),
                                **(_attempt_store(launcher, dist_cfg['timeout']) or {}))
    replaced = _replace_sync_bn(cfg.get('model'))
    if cfg.get('sync_bn'):
        cfg.sync_bn = None
        replaced += 1
    if replaced and dist.get_rank() == 0:
        log(f'note: no GPU: the {replaced} SyncBN setting(s) of the model train as BN (batch statistics per '
            'process; SyncBatchNorm needs CUDA).')
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    if wrapper.get('type', 'MMDistributedDataParallel') in ('MMDistributedDataParallel',
                                                            'DistributedDataParallel'):
        wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper


def _attempt_store(launcher, timeout):
    """``init_process_group`` arguments for a group that torchrun may restart: its store, keys under this attempt.

    Under torchrun (c10d or static rendezvous) the ranks of every attempt meet in the same store, torchrun's own
    (``TORCHELASTIC_USE_AGENT_STORE``), and torch (2.14) does not keep the attempts' keys apart. A restarted
    rank could read the address (gloo) or unique id (NCCL) that a rank of the dead attempt left under the same
    key: "connectFullMesh failed ... Connection refused", or a hang. The prefix ``vmamba/attempt_N``
    (``TORCHELASTIC_RESTART_COUNT``) gives each attempt keys of its own, the step beacons included. None (the
    default ``env://`` start) for any other launch."""
    if launcher != 'pytorch' or os.environ.get('TORCHELASTIC_USE_AGENT_STORE') != 'True':
        return None
    import torch.distributed as dist
    rank, world_size = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
    shared = dist.TCPStore(os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT']), world_size,
                           is_master=False, timeout=datetime.timedelta(seconds=timeout))
    attempt = os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')
    return dict(store=dist.PrefixStore(f'vmamba/attempt_{attempt}', shared), rank=rank, world_size=world_size)


def finish_distributed():
    """End the group in step: every rank waits for the others, then closes its connections.

    No rank leaves while another may still talk to it or still writes a checkpoint (a rank that exits first
    makes srun's ``--kill-on-bad-exit`` and torchrun stop the others), and the connections are closed by all
    ranks together rather than by each process's exit-time destructors."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _store():
    import torch.distributed as dist
    if not dist.is_available() or not dist.is_initialized():
        return None
    try:
        return dist.distributed_c10d._get_default_store()
    except Exception:  # a group without a store (e.g. an MPI one)
        return None


@HOOKS.register_module()
class StepBeaconHook(Hook):
    """Post ``(rank, iteration)`` to the group's store before each iteration, for the timeout message."""

    priority = 'VERY_HIGH'

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        store = _store()
        if store is not None:
            import torch.distributed as dist
            store.set(f'vmamba_step/{dist.get_rank()}', str(runner.iter + 1))


def add_step_beacon(cfg):
    """Add the step beacon to a distributed run's ``custom_hooks``."""
    if cfg.get('launcher', 'none') == 'none':
        return
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(h.get('type') == 'StepBeaconHook' for h in hooks):
        hooks.append(dict(type='StepBeaconHook'))
    cfg.custom_hooks = hooks


def explain_timeout(err, cfg, iteration):
    """A :class:`CollectiveTimeout` for a timed-out collective behind ``err``, else None."""
    import torch.distributed as dist
    text = str(err).lower()
    if ('timed out' not in text and 'timeout' not in text) or not dist.is_initialized() \
            or dist.get_world_size() < 2:
        return None
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    timeout = (cfg.get('env_cfg') or {}).get('dist_cfg', {}).get('timeout', DEFAULT_TIMEOUT_S)
    steps, store = {}, _store()
    if store is not None:
        try:
            store.set_timeout(datetime.timedelta(seconds=5))
            for r in range(world):
                key = f'vmamba_step/{r}'
                if store.check([key]):
                    steps[r] = int(store.get(key))
        except Exception:  # the store went with the stalled rank: say what is known
            pass
    mine = steps.get(rank, iteration)
    behind = {r: s for r, s in steps.items() if s < mine}
    missing = [r for r in range(world) if r not in steps]
    if behind:
        who = ', '.join(f'rank {r} is behind (last started iteration {s})' for r, s in sorted(behind.items()))
    elif missing:
        who = ', '.join(f'rank {r}' for r in missing) + ' never reached the first iteration'
    else:
        who = f'all ranks had started iteration {mine}, so one stalled inside it'
    return CollectiveTimeout(
        f'Distributed training timed out after {timeout} s: rank {rank} waited at iteration {mine} and {who}. '
        'Look at that rank\'s log (a data loader or file system hang, a crash); raise the limit with '
        '--dist-timeout SECONDS if a step legitimately takes that long.')
