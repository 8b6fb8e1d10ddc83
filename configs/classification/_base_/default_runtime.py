# Runtime of the VMamba classification configs (mmpretrain scope).
default_scope = 'mmpretrain'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # The official trainer keeps the best epoch: save_best tracks the (EMA) top-1.
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3, save_best='auto'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False),
    # load_from / tools/test.py take official .pth files as they are; 'ema' or 'raw' picks their weights,
    # and any mismatch raises.
    checkpoint_loader=dict(type='VMambaCheckpointHook', weights='ema'),
)

# timm ModelEma(decay=0.9999), updated after every optimizer step. As the official trainer, validation
# evaluates the EMA and the raw weights every epoch (accuracy/top1 and accuracy/top1_origin); testing
# evaluates once, the weights checkpoint_loader picked.
custom_hooks = [
    dict(type='VMambaEMAHook', momentum=1e-4, priority='ABOVE_NORMAL'),
]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)  # the official seed
