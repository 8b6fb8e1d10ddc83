"""Synthetic data sets for the CPU demos and CI, the demos' small backbone, and their pictures.

* :mod:`vmamba.demo.coco`: shapes in COCO instance format (detection / instance segmentation);
* :mod:`vmamba.demo.shapes_cls`: the same shapes, one per image, in the ImageNet folder layout (the
  detection demo's classification pretraining);
* :mod:`vmamba.demo.imagenet`: the classification demo's set; :mod:`vmamba.demo.ade20k`: street scenes in
  the ADE20K layout (segmentation);
* :mod:`vmamba.demo.datasets`: these sets as datasets of mmdet, mmseg and mmpretrain (one module each);
* :mod:`vmamba.demo.visualize`: predictions and training curves drawn to PNG files.
"""

#: The demos' backbone: a custom ``arch`` dict (see :func:`vmamba.models.variants.resolve_arch`) of the final
#: (tiny_s1l8) design - d_state 1, ssm_ratio 1, MLP 4x, conv stem and downsampling - at 32 channels and
#: 1/1/2/1 blocks (1.4M parameters instead of 29M), so a CPU trains it in minutes. The demo configs read it
#: from here.
DEMO_ARCH = dict(dims=32, depths=(1, 1, 2, 1))
