"""``tools/test.py``'s ``--show``/``--show-dir``, ``--tta`` and ``--out``, wired as each codebase's own
``tools/test.py`` wires them.

The codebases differ in where a visualisation folder goes, what a default test-time augmentation is and
whether predictions are dumped to a ``.pkl`` file or kept as maps by the evaluator; those differences are
read from the task's :class:`~vmamba.tasks.adapters.TaskAdapter`, not switched on here.
"""
import importlib
from copy import deepcopy

from vmamba.errors import ToolError

from .adapters import lookup

__all__ = ['apply_show', 'apply_tta', 'apply_out', 'add_dump_results']


def apply_show(cfg, show=False, show_dir=None, wait_time=2.0):
    """Turn on the visualisation hook the way each codebase's ``tools/test.py`` does."""
    hooks = cfg.get('default_hooks') or {}
    if 'visualization' not in hooks:
        raise ToolError('--show/--show-dir need a visualization hook in default_hooks, e.g. '
                        "default_hooks = dict(visualization=dict(type='...VisualizationHook'))")
    hook = hooks['visualization']
    adapter = lookup(cfg)
    if adapter.show_by_enable:
        hook.update(enable=True, show=show, wait_time=wait_time)
    else:
        hook.draw = True
        if show:
            hook.update(show=True, wait_time=wait_time)
    if show_dir:
        owner, key = adapter.show_dir_on.split('.')
        (cfg.visualizer if owner == 'visualizer' else hook)[key] = show_dir


def _flip_tta_pipeline(test_pipeline, adapter):
    """The test pipeline with its final packing step replaced by a flip / no-flip TestTimeAug."""
    pipeline = deepcopy(list(test_pipeline))
    pack = deepcopy(pipeline[-1])
    if adapter.tta_flip_meta:  # e.g. DetTTAModel needs the flip state to undo the flip on the boxes
        keys = tuple(pack.get('meta_keys', ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')))
        pack['meta_keys'] = keys + tuple(k for k in ('flip', 'flip_direction') if k not in keys)
    pipeline[-1] = dict(type='TestTimeAug',
                        transforms=[[dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)], [pack]])
    return pipeline


def apply_tta(cfg):
    """Wrap the model in the config's ``tta_model`` and test with its ``tta_pipeline``.

    Configs without them get the codebase's default: flip TTA for detection and classification. A
    segmentation config must define its own (mmseg's multi-scale TTA has no sensible default).
    """
    adapter = lookup(cfg)
    if 'tta_model' not in cfg:
        if adapter is None or adapter.tta_model is None:
            raise ToolError(f'--tta: the config defines no tta_model and scope {cfg.get("default_scope")!r} '
                            'has no default one.')
        cfg.tta_model = deepcopy(adapter.tta_model)
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:
        dataset = dataset['dataset']
    if 'tta_pipeline' not in cfg:
        if adapter is None or not adapter.flip_tta_pipeline:
            raise ToolError('--tta: the config defines no tta_pipeline.')
        cfg.tta_pipeline = _flip_tta_pipeline(dataset.pipeline, adapter)
    tta_model = deepcopy(cfg.tta_model)
    tta_model['module'] = cfg.model
    cfg.model = tta_model
    dataset.pipeline = cfg.tta_pipeline


def apply_out(cfg, out):
    """``--out``, part 1 (before the runner exists): check the name; mmseg keeps its maps in directory ``out``."""
    adapter = lookup(cfg)
    if adapter is not None and adapter.out_to_evaluator:
        cfg.test_evaluator['output_dir'] = out
        cfg.test_evaluator['keep_results'] = True
    elif not out.endswith(('.pkl', '.pickle')):
        raise ToolError(f'--out must name a .pkl file, got {out!r}.')


def add_dump_results(runner, cfg, out):
    """``--out``, part 2: append a metric that dumps the predictions to ``out`` (not where the evaluator
    keeps them itself)."""
    adapter = lookup(cfg)
    if adapter is not None and adapter.dump_results is None:
        return
    module, name = (adapter.dump_results if adapter else 'mmengine.evaluator:DumpResults').split(':')
    dump = getattr(importlib.import_module(module), name)
    runner.test_evaluator.metrics.append(dump(out_file_path=out))
