"""Test-only modules for test_distributed.py, imported by the configs it writes through ``custom_imports``:

* :class:`GradProbeHook` records, on every rank, the loss terms and the gradients the optimizer is about to apply
  at the first iteration (after DDP's all-reduce);
* :class:`SmoothMaskRCNN` / :class:`SmoothRPNHead`: Mask R-CNN with GELU instead of ReLU in the RPN, box and mask
  heads (same parameters), so that the loss is smooth and the two runs' gradients can be compared at fp32
  round-off. With ReLU, a few of the heads' ~6e5 pre-activations per image lie within fp32 round-off
  (~2e-6) of 0; which side of 0 they land on is decided by round-off, which differs between batch 1 and
  batch 2, and each flipped element moves the whole upstream gradient by ~5e-4 relative.
"""
import json
import os.path as osp

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from mmdet.models.dense_heads import RPNHead
from mmdet.models.detectors import MaskRCNN
from mmdet.registry import MODELS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@MODELS.register_module()
class SmoothRPNHead(RPNHead):
    """RPNHead with GELU after the shared conv (mmdet's forward_single calls F.relu)."""

    def forward_single(self, x):
        x = F.gelu(self.rpn_conv(x))
        return self.rpn_cls(x), self.rpn_reg(x)


@MODELS.register_module()
class SmoothMaskRCNN(MaskRCNN):
    """MaskRCNN whose ``nn.ReLU`` modules (box head fcs, mask head convs and deconv) are GELUs: no parameters
    change, and the initialisation (which reads the heads' configs, not their modules) neither."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for parent in list(self.modules()):
            for name, child in parent.named_children():
                if isinstance(child, nn.ReLU):
                    setattr(parent, name, nn.GELU())


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
