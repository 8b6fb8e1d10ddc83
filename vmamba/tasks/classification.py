"""mmpretrain-side helpers for the ImageNet classification configs (imported through ``custom_imports``).

The classifier itself is mmpretrain's ``ImageClassifier``: the ``VMamba`` backbone (registered by
``vmamba.models``) with ``out_indices=(3,)``, a global-average-pooling neck and a ``LinearClsHead``. That is
parameter for parameter the official classifier, with these names::

    official checkpoint          this classifier
    classifier.norm.*       ->   backbone.outnorm3.*     (LayerNorm over the last stage's channels)
    classifier.head.*       ->   head.fc.*               (the 1000-way linear layer)
    everything else         ->   backbone.*              (patch_embed, layers.i.blocks.j, layers.i.downsample)

What this module adds to mmpretrain:

* :class:`VMambaCheckpointHook`: lets ``load_from`` (and so ``tools/test.py CONFIG CKPT``) take an official
  ``.pth`` as it is, picks its EMA or raw weights, and raises on any key or shape that does not fit (mmengine
  itself only warns and goes on with random weights).
* :class:`VMambaEMAHook`: mmpretrain's EMA hook, validating both the EMA and the raw weights (as the official
  trainer does) but testing only once.
* :func:`convert_official_checkpoint`, used by the hook and by ``tools/convert_checkpoint.py``.
"""
import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.engine.hooks import EMAHook
from mmpretrain.registry import HOOKS

from vmamba.errors import ToolError
from vmamba.models.checkpoint import check_state_dict_fits, convert_official_keys, strip_module

__all__ = ['WEIGHTS', 'official_to_classifier_keys', 'check_official_checkpoint', 'convert_official_checkpoint',
           'VMambaCheckpointHook', 'VMambaEMAHook']

#: Which weights of a checkpoint to use: the exponential moving average (the released accuracy of every
#: official model but vanilla-tiny), or the raw trained weights.
WEIGHTS = ('ema', 'raw')
_OFFICIAL_ENTRY = {'ema': 'model_ema', 'raw': 'model'}
_EMA_PREFIX = 'module.'  # mmengine's EMA model wraps the network as `.module`


def official_to_classifier_keys(state_dict):
    """Rename official classifier (``VSSM``) keys to ``ImageClassifier`` keys (see the module docstring)."""
    out = {}
    for key, value in convert_official_keys(state_dict).items():
        if key.startswith('classifier.norm.'):
            key = 'backbone.outnorm3.' + key[len('classifier.norm.'):]
        elif key.startswith('classifier.head.'):
            key = 'head.fc.' + key[len('classifier.head.'):]
        else:
            key = 'backbone.' + key
        out[key] = value
    return out


def _tensors(state):
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _is_official(checkpoint):
    """An official file (``{'model', 'model_ema', 'config', ...}``) or a bare official state dict."""
    if 'state_dict' in checkpoint:
        return False
    return 'model' in checkpoint or 'model_ema' in checkpoint or 'classifier.head.weight' in checkpoint


def check_official_checkpoint(checkpoint, weights='ema', source='the checkpoint', switch='--weights raw'):
    """Raise :class:`ToolError` unless ``checkpoint`` is an official file holding the ``weights`` asked for.

    ``switch`` is what the user types to pick the raw weights instead (the converter's ``--weights raw``)."""
    if not isinstance(checkpoint, dict):
        raise ToolError(f'{source} holds a {type(checkpoint).__name__}, not a checkpoint dict; give the official '
                        'VMamba release file (a dict with model / model_ema entries).')
    if not _is_official(checkpoint):
        entries = ', '.join(map(str, sorted(checkpoint, key=str)[:8])) or 'none'
        hint = (' It is an mmengine checkpoint: tools/test.py and load_from read it as it is, no conversion '
                'needed.' if 'state_dict' in checkpoint else '')
        raise ToolError(f'{source} is not an official VMamba classification checkpoint (its entries: {entries}; '
                        f'an official file has model and model_ema).{hint}')
    entry = _OFFICIAL_ENTRY[weights]
    if 'classifier.head.weight' in checkpoint:  # a bare state dict: raw weights only
        if weights != 'raw':
            raise ToolError(f'{source} is a bare state dict, which holds raw weights only (no EMA). Use {switch}.')
        return
    if entry not in checkpoint:
        raise ToolError(f'weights={weights!r} needs the {entry!r} entry, but {source} has only '
                        f'{sorted(k for k in checkpoint if k in _OFFICIAL_ENTRY.values())} (vanilla-tiny was '
                        f'released without EMA weights). Use the other weights: {switch}.')


def convert_official_checkpoint(checkpoint, weights='ema'):
    """An official classification checkpoint as ``{'state_dict': ...}`` for the ``ImageClassifier``.

    ``weights`` picks the ``model_ema`` (``'ema'``) or ``model`` (``'raw'``) entry; a bare ``VSSM`` state dict
    counts as raw weights.
    """
    if weights not in WEIGHTS:
        raise ValueError(f'weights must be one of {WEIGHTS}, got {weights!r}')
    if 'classifier.head.weight' in checkpoint:  # a bare state dict
        checkpoint = {'model': checkpoint}
    entry = _OFFICIAL_ENTRY[weights]
    if entry not in checkpoint:
        raise KeyError(
            f'weights={weights!r} needs the {entry!r} entry, but this official checkpoint has only '
            f'{sorted(k for k in checkpoint if k in _OFFICIAL_ENTRY.values())} (vanilla-tiny was released without '
            "EMA weights). Use weights='raw': --cfg-options default_hooks.checkpoint_loader.weights=raw")
    return {'state_dict': official_to_classifier_keys(_tensors(checkpoint[entry]))}


@HOOKS.register_module()
class VMambaCheckpointHook(Hook):
    """Make ``load_from`` accept official VMamba checkpoints, pick EMA or raw weights, and fail loudly.

    mmengine's ``Runner.load_checkpoint`` calls every hook's ``after_load_checkpoint`` with the loaded dict
    before it copies ``state_dict`` into the model; this hook rewrites that dict in place so that
    ``state_dict`` holds exactly the picked weights:

    * an official file (``{'model', 'model_ema', 'config', ...}``, or a bare ``VSSM`` state dict) is converted
      with :func:`convert_official_checkpoint`;
    * a bare ``ImageClassifier`` state dict (``tools/convert_checkpoint.py``'s ``.safetensors``) is taken as it is;
    * an mmengine checkpoint written with an EMA hook holds the EMA weights in ``state_dict`` and the raw ones
      under ``module.`` in ``ema_state_dict``: the entry not picked is dropped;
    * the result must match the model's keys and shapes exactly, else :class:`CheckpointMismatchError`
      (the Runner loads non-strictly and would only warn; :func:`vmamba.models.checkpoint.check_state_dict_fits`).

    The EMA hook, which runs next, then starts its average from the same weights, so validation and testing
    evaluate the picked weights whichever model they use. When resuming, the checkpoint is only checked, never
    rewritten: a resumed run continues with its raw weights and its EMA exactly as saved.

    Args:
        weights: ``'ema'`` (the default; the released accuracy of all official models but vanilla-tiny) or
            ``'raw'``. Asking for EMA weights a checkpoint doesn't have raises. Override from the command line
            with ``--cfg-options default_hooks.checkpoint_loader.weights=raw``.
    """

    priority = 'VERY_HIGH'  # before the EMA hook (ABOVE_NORMAL), which reads `state_dict` on load

    def __init__(self, weights='ema'):
        if weights not in WEIGHTS:
            raise ValueError(f'VMambaCheckpointHook: weights must be one of {WEIGHTS}, got {weights!r}')
        self.weights = weights

    def after_load_checkpoint(self, runner, checkpoint):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if _is_official(checkpoint):
            if runner._resume:
                raise ValueError('Cannot resume training from an official VMamba checkpoint (it holds no mmengine '
                                 'training state). Start from its weights with load_from=PATH (without --resume).')
            converted = convert_official_checkpoint(checkpoint, self.weights)
            checkpoint.clear()
            checkpoint.update(converted)
            source = 'official checkpoint'
        else:
            if not runner._resume:
                self._pick_mmengine_weights(checkpoint)
            source = 'checkpoint'
        # Without a `state_dict` entry the Runner loads the dict itself as the state dict.
        check_state_dict_fits(model, strip_module(checkpoint.get('state_dict', checkpoint)), source)
        if 'ema_state_dict' in checkpoint:  # resuming
            ema = {k[len(_EMA_PREFIX):]: v for k, v in checkpoint['ema_state_dict'].items()
                   if k.startswith(_EMA_PREFIX)}
            check_state_dict_fits(model, ema, f'{source} (its ema_state_dict)')
        else:
            runner.logger.info(f'VMambaCheckpointHook: loaded the {self.weights} weights of the {source}.')

    def _pick_mmengine_weights(self, checkpoint):
        if 'state_dict' not in checkpoint:  # a bare state dict (a converted .safetensors): the weights it holds,
            weights = dict(checkpoint)       # under `state_dict`, where the EMA hook looks for them
            checkpoint.clear()
            checkpoint['state_dict'] = weights
            return
        has_ema = 'ema_state_dict' in checkpoint
        if self.weights == 'ema' and not has_ema:
            raise KeyError("weights='ema', but this checkpoint holds no EMA weights (it was saved without an "
                           "EMAHook). Use the raw weights: --cfg-options default_hooks.checkpoint_loader.weights=raw")
        if has_ema:
            raw = checkpoint.pop('ema_state_dict')  # mmengine's EMAHook saves the raw weights here
            if self.weights == 'raw':
                checkpoint['state_dict'] = {k[len(_EMA_PREFIX):]: v for k, v in raw.items()
                                            if k.startswith(_EMA_PREFIX)}


@HOOKS.register_module()
class VMambaEMAHook(EMAHook):
    """mmpretrain's ``EMAHook`` (timm's ``ModelEma``), validating like the official trainer, testing once.

    Validation reports the EMA weights (``accuracy/top1``) and the raw ones (``accuracy/top1_origin``) every
    time, as the official trainer tracks both (``evaluate_on_origin`` defaults to True here). Testing evaluates
    once, the EMA model (the raw one with ``evaluate_on_ema=False``): after :class:`VMambaCheckpointHook` both
    hold the weights picked from the checkpoint, so that is what is tested and what ``--out`` dumps.
    mmpretrain's hook would test a second time with ``evaluate_on_origin``, and ``--out`` would then hold the
    second pass's predictions.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault('evaluate_on_origin', True)
        super().__init__(**kwargs)

    def before_test_epoch(self, runner):
        if self.evaluate_on_ema:
            self._swap_ema_parameters()

    def after_test_epoch(self, runner, metrics=None):
        if self.evaluate_on_ema:
            self._swap_ema_parameters()
