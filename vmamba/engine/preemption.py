"""Stop on SIGTERM, SIGINT or SIGUSR1 with a checkpoint of the exact point reached, and ask to be requeued.

A scheduler ends a job with a signal (Slurm: SIGTERM before a preemption, or the signal asked for with
``--signal`` before the time limit); a user with Ctrl-C. Without a handler the process dies at once and the
iterations since the last checkpoint are lost. :class:`PreemptionHook` installs handlers that only note the
signal; after the current iteration (all ranks agree on it with one small all-reduce per iteration) it writes
an atomic checkpoint of that iteration, logs one line saying what was saved and how to resume, and raises
:class:`Preempted`. ``tools/train.py`` exits with :data:`REQUEUE_EXIT` (75, ``EX_TEMPFAIL`` of sysexits.h:
"try again later"), which ``tools/slurm_train.sh`` turns into ``scontrol requeue``.

Further signals while the checkpoint is written are noted and ignored, so a second Ctrl-C cannot leave a
half-written file (the write itself is atomic anyway: :mod:`.checkpointing`); once it is written they are
ignored outright, so that a signal late in the exit cannot kill the process either. In an epoch-based run the
checkpoint is taken in the middle of the epoch; :class:`~.exact_resume.ExactEpochBasedTrainLoop` continues
from that batch. DataLoader worker processes (forked after the handlers are in place) ignore the signals,
so a signal sent to the whole process group does not kill them under the main process.
"""
import os
import os.path as osp
import signal

import torch
from mmengine.dist import all_reduce, get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from .checkpointing import SafeCheckpointHook

__all__ = ['REQUEUE_EXIT', 'SIGNALS', 'Preempted', 'PreemptionHook', 'add_preemption_hook']

#: Exit status of a run stopped by a signal after saving its checkpoint: "temporary failure, run me again".
REQUEUE_EXIT = 75
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
#: Prefix of the checkpoint an epoch-based run writes in the middle of an epoch.
PREEMPTED_PREFIX = 'preempted_iter_'


class Preempted(BaseException):
    """The run stopped on a signal after saving its checkpoint (not an error: ``tools/train.py`` exits 75).

    A ``BaseException``, like ``KeyboardInterrupt``, so that no ``except Exception`` on the way swallows it.
    """


@HOOKS.register_module()
class PreemptionHook(Hook):
    """Turn SIGTERM/SIGINT/SIGUSR1 into "finish this iteration, save it, exit 75" (see the module docstring).

    Installed in ``before_run``, before the training loader's worker processes are started. Runs after the
    checkpoint hook of the same iteration, so a checkpoint already written for this iteration is reused.
    """

    priority = 'LOWEST'

    def __init__(self, signals=SIGNALS):
        self.signals = tuple(signal.Signals(s) for s in signals)
        self.received = None
        self.saving = False
        self._pid = None
        self._previous = {}

    # -- the handler: note the signal, nothing else (it may run at any bytecode)
    def _handle(self, signum, frame):
        if os.getpid() != self._pid:  # a forked DataLoader worker: the main process decides
            return
        if self.received is None:
            self.received = signal.Signals(signum).name

    def install(self):
        self._pid = os.getpid()
        for sig in self.signals:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. under a test runner's thread): no handlers
                return

    def ignore(self):
        """Ignore the signals from here on: the checkpoint is written and the process is leaving.

        The rank that leaves first makes torchrun (and srun's ``--kill-on-bad-exit``) send SIGTERM to the
        others. Python puts back the default action of the signals it handles as the interpreter shuts down, so
        that SIGTERM would kill a rank late in its exit and turn its status 75 into death by signal; an ignored
        signal stays ignored.
        """
        for sig in self._previous:  # the signals whose handlers are in place (none off the main thread)
            signal.signal(sig, signal.SIG_IGN)

    def restore(self):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def before_run(self, runner):
        self.install()

    def after_run(self, runner):
        self.restore()

    # -- the stop
    def _stop_now(self):
        flag = torch.tensor([1 if self.received else 0], dtype=torch.int32)
        if get_world_size() > 1:  # every rank stops after the same iteration
            all_reduce(flag, op='max')
        return bool(flag.item())

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if not self._stop_now():
            return
        self.saving = True
        why = self.received or 'a signal on another rank'
        path = self._save(runner)
        step = runner.iter + 1
        config = runner.cfg.filename or 'CONFIG'
        how = (f'resume with: tools/train.py {config} --work-dir {runner.work_dir} --resume' if path
               else 'no checkpoint could be written (the run has no checkpoint hook)')
        message = (f'Stopped by {why} after iteration {step}: saved {path}; {how} '
                   f'(exit status {REQUEUE_EXIT}: requeue the job).' if path else
                   f'Stopped by {why} after iteration {step}: {how} (exit status {REQUEUE_EXIT}).')
        runner.logger.warning(message)
        self.ignore()
        raise Preempted(message)

    def _save(self, runner):
        """Write the checkpoint of this exact iteration through the safe checkpoint hook; its path."""
        hook = next((h for h in runner.hooks if isinstance(h, SafeCheckpointHook)), None)
        if hook is None:
            return None
        step = runner.iter + 1
        by_epoch_loop = not hasattr(runner.train_loop, 'dataloader_iterator')
        if not by_epoch_loop and not hook.by_epoch:  # the hook's own iteration checkpoint
            path = hook.file_backend.join_path(hook.out_dir, hook.filename_tmpl.format(step))
            if getattr(hook, 'last_ckpt', None) != path:
                hook._save_checkpoint_with_step(runner, step, meta=dict(epoch=runner.epoch, iter=step))
            return path
        # In the middle of an epoch: its own name, outside the hook's rotation (removed once superseded).
        name = f'{PREEMPTED_PREFIX}{step}.pth'
        path = hook.file_backend.join_path(hook.out_dir, name)
        hook._write(runner, name, save_optimizer=hook.save_optimizer,
                    save_param_scheduler=hook.save_param_scheduler,
                    meta=dict(epoch=runner.epoch, iter=step), by_epoch=False, backend_args=hook.backend_args)
        runner.message_hub.update_info('last_ckpt', path)
        hook.point_to(runner, path)
        return path

    def after_train_epoch(self, runner):
        """Remove mid-epoch checkpoints once a regular checkpoint after them is in place."""
        last = runner.message_hub.get_info('last_ckpt')
        if not is_main_process() or not last or osp.basename(last).startswith(PREEMPTED_PREFIX):
            return
        if not osp.isfile(last):
            return
        folder = osp.dirname(last)
        for name in os.listdir(folder):
            if name.startswith(PREEMPTED_PREFIX) and name.endswith('.pth'):
                os.remove(osp.join(folder, name))


def add_preemption_hook(cfg):
    """Append :class:`PreemptionHook` to the config's ``custom_hooks`` (once)."""
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(h.get('type') in ('PreemptionHook', PreemptionHook) for h in hooks):
        hooks.append(dict(type='PreemptionHook'))
    cfg.custom_hooks = hooks
