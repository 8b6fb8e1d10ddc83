"""What differs between the three task codebases, in one table: one :class:`TaskAdapter` per task.

The tools serve detection (mmdet), segmentation (mmseg) and classification (mmpretrain) from the config's
``default_scope``. Everything that depends on which codebase it is (how ``--out``, ``--show-dir`` and
``--tta`` are wired, the dataloader defaults its own tools add, which packages its metrics need, where its
registries live) is a field here, and :func:`lookup` is the one place a scope is
turned into a task. Adding a codebase means adding a row, not finding the ``if scope == ...`` branches.

This module imports nothing but the standard library: ``tools/install.py`` reads it (by file path)
before torch or any OpenMMLab package is installed, and module paths are strings, imported by the code
that needs them.
"""
from typing import NamedTuple, Optional

__all__ = ['TaskAdapter', 'ADAPTERS', 'SUPPORTED_SCOPES', 'lookup', 'install_requirements']


class TaskAdapter(NamedTuple):
    task: str                      #: what the codebase trains ('detection', ...)
    scope: str                     #: its ``default_scope`` (and import name)
    registry: str                  #: the module with its registries (``MODELS``, ``DATASETS`` ...)
    install_extras: tuple          #: further pip packages its metrics/datasets need
    dump_results: Optional[str]    #: ``module:Class`` of the metric that writes ``--out`` (None: no .pkl)
    out_to_evaluator: bool         #: ``--out`` is a folder its evaluator writes its maps to (mmseg)
    show_dir_on: str               #: where ``--show-dir`` goes: 'hook.out_dir', 'hook.test_out_dir' or
    #:                                'visualizer.save_dir'
    show_by_enable: bool           #: its visualisation hook is switched on by ``enable`` (else ``draw``)
    tta_model: Optional[dict]      #: the default ``tta_model`` for ``--tta`` (None: the config must have one)
    flip_tta_pipeline: bool        #: without a ``tta_pipeline``, test with flip / no-flip
    tta_flip_meta: bool            #: the packing step must keep the flip state (to undo it on boxes)
    default_collate: bool          #: its tools default ``collate_fn`` to ``default_collate``
    headline_metrics: tuple        #: (metric key, label) of what its demos' progress lines and curves show


ADAPTERS = (
    TaskAdapter(
        task='detection', scope='mmdet', registry='mmdet.registry',
        install_extras=('pycocotools',),
        dump_results='mmdet.evaluation:DumpDetResults',  # stores masks as RLE, like mmdet's tool
        out_to_evaluator=False, show_dir_on='hook.test_out_dir', show_by_enable=False,
        tta_model=dict(type='DetTTAModel', tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100)),
        flip_tta_pipeline=True, tta_flip_meta=True, default_collate=False,
        headline_metrics=(('coco/bbox_mAP', 'box mAP'), ('coco/segm_mAP', 'mask mAP'))),
    TaskAdapter(
        task='segmentation', scope='mmseg', registry='mmseg.registry',
        install_extras=('ftfy', 'regex'),
        dump_results=None, out_to_evaluator=True, show_dir_on='visualizer.save_dir', show_by_enable=False,
        tta_model=None,  # mmseg's multi-scale TTA has no sensible default
        flip_tta_pipeline=False, tta_flip_meta=False, default_collate=False,
        headline_metrics=(('mIoU', 'mIoU %'),)),
    TaskAdapter(
        task='classification', scope='mmpretrain', registry='mmpretrain.registry',
        install_extras=(),
        dump_results='mmengine.evaluator:DumpResults',
        out_to_evaluator=False, show_dir_on='hook.out_dir', show_by_enable=True,
        tta_model=dict(type='mmpretrain.AverageClsScoreTTA'),
        flip_tta_pipeline=True, tta_flip_meta=False, default_collate=True,
        headline_metrics=(('accuracy/top1', 'top-1 %'),)),
)

#: scope -> task, for messages.
SUPPORTED_SCOPES = {a.scope: a.task for a in ADAPTERS}


def lookup(cfg_or_scope):
    """The adapter of a config (by its ``default_scope``) or of a scope name; None if no task has it."""
    scope = cfg_or_scope.get('default_scope') if hasattr(cfg_or_scope, 'get') else cfg_or_scope
    return next((a for a in ADAPTERS if a.scope == scope), None)


def install_requirements():
    """The further pip packages the three codebases' metrics and datasets need (the codebases themselves are
    pinned per stack in ``vmamba/mmstack.py``)."""
    return [e for a in ADAPTERS for e in a.install_extras]
