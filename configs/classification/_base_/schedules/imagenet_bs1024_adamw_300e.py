# The official ImageNet schedule, for a total batch of 1024 (8 GPUs x 128):
#   AdamW lr 5e-4 per 512 images = 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0.05, gradient norm
#   clipped at 5, mixed precision (fp16 autocast, dynamic loss scale);
#   300 epochs: linear warm-up from lr/1000 over 20 epochs, then cosine to lr/100 (1e-5), both per iteration.
# Weight decay exclusions, as the official set_weight_decay: no decay for 1-D parameters and names ending in
# `.bias`, i.e. biases, LayerNorm weights and Ds. A_logs and dt_projs_bias are 2-D and DO get decay. With
# VMamba's parameters that is exactly mmengine's norm/bias/flat multipliers at 0 (tests/classification check it).
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05),
    clip_grad=dict(max_norm=5.0),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0))

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=20, convert_to_iter_based=True),
    # eta_min as a ratio, so that --auto-scale-lr scales the floor with the peak, as the official code does;
    # `end` defaults to train_cfg.max_epochs.
    dict(type='CosineAnnealingLR', eta_min_ratio=1e-2, by_epoch=True, begin=20, convert_to_iter_based=True),
]

train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()

# The learning rate above is for a total batch of 1024; --auto-scale-lr rescales it linearly for another.
auto_scale_lr = dict(enable=False, base_batch_size=1024)
