"""A test-only mmengine hook that records, on every rank, the loss terms and the gradients the optimizer
is about to apply at the first iteration (after DDP's all-reduce). Imported by the configs that
test_distributed.py writes, through ``custom_imports``."""
import json
import os.path as osp

import torch
import torch.distributed as dist
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class GradProbeHook(Hook):

    def __init__(self, out_dir):
        self.out_dir = out_dir

    def _rank(self):
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    def before_train(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        names = {id(p): n for n, p in model.named_parameters()}
        done = []

        def save_grads(optimizer, args, kwargs):
            if done:
                return
            grads = {names[id(p)]: p.grad.detach().clone()
                     for group in optimizer.param_groups for p in group['params'] if p.grad is not None}
            torch.save(grads, osp.join(self.out_dir, f'grads_rank{self._rank()}.pt'))
            done.append(True)

        runner.optim_wrapper.optimizer.register_step_pre_hook(save_grads)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter != 0:
            return
        record = {k: float(v) for k, v in outputs.items()}
        record['world_size'] = dist.get_world_size() if dist.is_initialized() else 1
        record['backend'] = dist.get_backend() if dist.is_initialized() else None
        record['image_ids'] = [s.img_id for s in data_batch['data_samples']]
        with open(osp.join(self.out_dir, f'losses_rank{self._rank()}.json'), 'w') as f:
            json.dump(record, f)
