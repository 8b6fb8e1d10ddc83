"""Published numbers the analysis tools compare against (official MzeroMiko/VMamba README and
``assets/performance.md``; ``analyze/flops.py`` for the unrounded detection/segmentation counts).

FLOPs are fvcore multiply-accumulates: classification at 224x224 (head included), Mask R-CNN at 1280x800,
UperNet at 512x2048 (decode head only, as the inference graph; parameters include the auxiliary head).
Throughputs were measured on one A100 at batch 128 (inference fp32, training fwd+loss+bwd under AMP).
Only the numbers are kept here; the variants themselves live in :mod:`vmamba.models.variants`.
"""

__all__ = ['CLASSIFICATION', 'DETECTION', 'SEGMENTATION', 'BASELINES', 'published']

#: arch -> ImageNet-1K row: params (M), GFLOPs at 224, top-1, inference / training throughput (img/s, A100).
CLASSIFICATION = {
    'vanilla_tiny': dict(mparams=23, gflops=5.63, top1=82.2, tp=638, train_tp=195),
    'vanilla_small': dict(mparams=44, gflops=11.23, top1=83.5, tp=359, train_tp=111),
    'vanilla_base': dict(mparams=76, gflops=18.02, top1=83.7, tp=268, train_tp=84),
    'tiny_s2l5': dict(mparams=31, gflops=4.86, top1=82.5, tp=1340, train_tp=464),
    'small_s2l15': dict(mparams=50, gflops=8.72, top1=83.6, tp=877, train_tp=314),
    'base_s2l15': dict(mparams=89, gflops=15.36, top1=83.9, tp=646, train_tp=247),
    'tiny_s1l8': dict(mparams=30, gflops=4.91, top1=82.6, tp=1686, train_tp=571),
    'small_s1l20': dict(mparams=49, gflops=8.61, top1=83.3, tp=1106, train_tp=390),
    'base_s1l20': dict(mparams=87, gflops=15.22, top1=83.8, tp=827, train_tp=313),
}

#: arch -> COCO Mask R-CNN 1x row: params (M), GFLOPs at 1280x800, box / mask AP.
#: (The README's 384 G for small_s2l15 is a digit swap of the 348.9 G that analyze/flops.py computes.)
DETECTION = {
    'vanilla_tiny': dict(mparams=42, gflops=286, box_ap=46.5, mask_ap=42.1),
    'vanilla_small': dict(mparams=64, gflops=400, box_ap=48.2, mask_ap=43.0),
    'vanilla_base': dict(mparams=96, gflops=540, box_ap=48.6, mask_ap=43.3),
    'tiny_s2l5': dict(mparams=50.212, gflops=270.186, box_ap=47.4, mask_ap=42.7),
    'small_s2l15': dict(mparams=69.654, gflops=348.922, box_ap=48.7, mask_ap=43.7),
    'base_s2l15': dict(mparams=108, gflops=485.496, box_ap=49.2, mask_ap=44.1),
    'tiny_s1l8': dict(mparams=49.755, gflops=271.163, box_ap=47.3, mask_ap=42.7),
}

#: arch -> ADE20K UperNet 160k row: params (M), GFLOPs at 512x2048, single-scale mIoU.
SEGMENTATION = {
    'vanilla_tiny': dict(mparams=55, gflops=964, miou=47.3),
    'vanilla_small': dict(mparams=76, gflops=1081, miou=49.5),
    'vanilla_base': dict(mparams=110, gflops=1226, miou=50.0),
    'tiny_s2l5': dict(mparams=62.359, gflops=947.780, miou=48.3),
    'small_s2l15': dict(mparams=81.801, gflops=1028.405, miou=50.6),
    'base_s2l15': dict(mparams=122.069, gflops=1170.344, miou=51.0),
    'tiny_s1l8': dict(mparams=61.903, gflops=948.780, miou=47.9),
}

#: Baselines as the VMamba paper quotes them (ImageNet 224, and the Swin-T detector/segmentor).
BASELINES = {
    'swin_t': dict(mparams=28, gflops=4.5, top1=81.2, tp=1244, train_tp=987),
    'resnet50': dict(mparams=26, gflops=4.1),
    'swin_t_maskrcnn': dict(mparams=48, gflops=267, box_ap=42.7, mask_ap=39.3),
    'swin_t_upernet': dict(mparams=60, gflops=945, miou=44.4),
}

_TABLES = {'classification': CLASSIFICATION, 'detection': DETECTION, 'segmentation': SEGMENTATION}


def published(task, name):
    """The published row for a VMamba ``name`` (canonical arch) or a baseline name under ``task``, or None."""
    if name in BASELINES:
        return BASELINES[name]
    return _TABLES.get(task, {}).get(name)
