# VMamba-S[s1l20] (ssm_ratio 1, 20 blocks in stage 3) on ImageNet-1K, 224 px, the official recipe.
# Published (official repo README): 83.3 top-1 (EMA), 49M params, 8.6G FLOPs.
# Official weights: vssm1_small_0229s_ckpt_epoch_240.pth (release assets of MzeroMiko/VMamba); evaluate with
#   python tools/test.py configs/classification/vmamba_small_s1l20_in1k.py \
#       checkpoints/vssm1_small_0229s_ckpt_epoch_240.pth
# Train (8 GPUs x 128 images): bash tools/dist_train.sh configs/classification/vmamba_small_s1l20_in1k.py 8
#
# Everything but the variant is in _base_/ (model, data, schedule, runtime). The variant's widths and its
# official drop-path rate are read from vmamba.models.variants, the one table of variants.
_base_ = [
    './_base_/models/vmamba_classifier.py',
    './_base_/datasets/imagenet_bs128_224.py',
    './_base_/schedules/imagenet_bs1024_adamw_300e.py',
    './_base_/default_runtime.py',
]
from vmamba.models.variants import resolve_arch  # noqa: E402  (functions never enter the config)

# Names starting with `__` are dropped by mmengine, so they don't end up in the dumped config.
__arch_name, __arch = resolve_arch('small_s1l20')

model = dict(
    backbone=dict(arch=__arch_name, drop_path_rate=__arch['drop_path_rate']),  # the official value
    head=dict(in_channels=__arch['dims'] * 2**3))  # the last stage's width
