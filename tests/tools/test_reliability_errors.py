"""Stop on a non-finite loss, strict loading in tools/test.py, and one-line errors for the mistakes a user makes
(vmamba/engine/nan_guard.py, strict_loading.py, exact_resume.TrackedDataset, vmamba/tasks/config_check.py,
vmamba/errors.py, vmamba/models/checkpoint.py, the VMamba input check). Everything runs in-process on tiny configs."""
import json
import os
import os.path as osp

import pytest
import torch

from reliability_lib import exit_message, losses, names, write_config
from repo_testlib import REPO, tool


# ----------------------------------------------------------------------------------- non-finite loss
def test_training_stops_at_the_first_non_finite_loss(train, tmp_path):
    """Two good iterations (checkpoint at 2), then the lr jumps by 1e30: the run stops with status 1 at the
    first non-finite loss or weights, names it and the last good checkpoint, and writes nothing non-finite."""
    config = write_config(tmp_path, 'cls_iter', tmp_path / 'data', length=8, interval=1, keep=2, extra='''
param_scheduler = [dict(type='MultiStepLR', by_epoch=False, milestones=[2], gamma=1e30)]
optim_wrapper = dict(clip_grad=None)
''')
    work = tmp_path / 'work'
    message = exit_message(train.main, [config, '--work-dir', str(work), *names('nanstop')])
    assert message.startswith('error: Training stopped at iteration ')
    stopped = int(message.split('iteration ')[1].split(':')[0])
    assert stopped in (3, 4), message
    assert 'non-finite' in message and f'Last good checkpoint: {work / f"iter_{stopped - 1}.pth"}' in message
    if 'non-finite loss' in message:
        assert 'loss=nan' in message or 'loss=inf' in message
    checkpoints = sorted(f for f in os.listdir(work) if f.endswith('.pth'))
    assert checkpoints == [f'iter_{i}.pth' for i in range(max(1, stopped - 2), stopped)]
    for name in checkpoints:
        state = torch.load(work / name, map_location='cpu', weights_only=False)['state_dict']
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), name
    assert max(losses(work)) <= stopped


# ----------------------------------------------------------------------------------- strict test loading
@pytest.fixture(scope='module')
def seg_config(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('strict')
    return write_config(tmp, 'seg', tmp / 'data', length=1, interval=1), tmp


def test_test_tool_refuses_a_checkpoint_that_does_not_fit(test_tool, seg_config, tmp_path):
    """A classification checkpoint on the segmentation config: listed keys, exit status 1, nothing scored."""
    config, _ = seg_config
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    cls_cfg = Config.fromfile(write_config(tmp_path, 'cls', tmp_path / 'cls_data'))
    init_default_scope('mmpretrain')
    ckpt = tmp_path / 'epoch_2.pth'
    torch.save({'state_dict': MODELS.build(cls_cfg.model).state_dict(), 'meta': {}}, ckpt)
    message = exit_message(test_tool.main, [config, str(ckpt), '--work-dir', str(tmp_path / 't'),
                                            *names('strict')])
    assert f'{ckpt} does not fit the model of this config (EncoderDecoder)' in message
    assert 'missing keys: backbone.outnorm0.weight' in message and 'unexpected keys: head.fc.weight' in message
    assert '--partial' in message
    assert not list((tmp_path / 't').glob('*/*.json'))  # no metrics


def test_partial_loading_is_explicit(test_tool, seg_config, tmp_path):
    config, _ = seg_config
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    state = MODELS.build(Config.fromfile(config).model).state_dict()
    state.pop('decode_head.conv_seg.weight')
    ckpt = tmp_path / 'partial.pth'
    torch.save({'state_dict': state, 'meta': {}}, ckpt)
    message = exit_message(test_tool.main, [config, str(ckpt), '--work-dir', str(tmp_path / 't1'),
                                            *names('partial1')])
    assert '1 missing keys: decode_head.conv_seg.weight' in message
    metrics = test_tool.main([config, str(ckpt), '--partial', '--work-dir', str(tmp_path / 't2'),
                              *names('partial2')])
    assert 0 <= metrics['mIoU'] <= 100


# ----------------------------------------------------------------------------------- unreadable files
def test_files_that_are_not_checkpoints(train, test_tool, tmp_path):
    from vmamba.models.checkpoint import CheckpointReadError, load_checkpoint_file
    (tmp_path / 'random.pth').write_bytes(os.urandom(2048))
    (tmp_path / 'text.pth').write_text('<html>404 Not Found</html>\n')
    for name, what in (('random.pth', 'binary data'), ('text.pth', 'text')):
        with pytest.raises(CheckpointReadError, match=f'it is not a PyTorch checkpoint \\(it starts with {what}'):
            load_checkpoint_file(tmp_path / name)
    # as init_cfg of the backbone: the run stops with the file named, in one line
    config = write_config(tmp_path, 'cls', tmp_path / 'data', extra=f'''
model.update(backbone=dict(arch=dict(dims=8, depths=(1, 1, 1, 1)),
                           init_cfg=dict(type='Pretrained', checkpoint={str(tmp_path / "random.pth")!r})))
''')
    message = exit_message(train.main, [config, '--work-dir', str(tmp_path / 'w'), *names('init')])
    assert f'Cannot read the checkpoint {tmp_path / "random.pth"}: it is not a PyTorch checkpoint' in message
    # tools/test.py
    message = exit_message(test_tool.main, [config, str(tmp_path / 'text.pth'), '--work-dir',
                                            str(tmp_path / 't'), *names('testtext')])
    assert 'text.pth: it is not a PyTorch checkpoint (it starts with text' in message


def test_converter_errors(tmp_path):
    convert = tool('convert_checkpoint')
    config = osp.join(REPO, 'configs', 'classification', 'vmamba_tiny_in1k.py')
    (tmp_path / 'random.pth').write_bytes(os.urandom(2048))
    torch.save([1, 2, 3], tmp_path / 'list.pth')
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'meta': {}}, tmp_path / 'mmengine.pth')
    torch.save({'model': {'classifier.head.weight': torch.zeros(1)}}, tmp_path / 'raw_only.pth')
    out = str(tmp_path / 'out.pth')
    message = exit_message(convert.main, [config, str(tmp_path / 'random.pth'), out])
    assert 'random.pth: it is not a PyTorch checkpoint' in message
    message = exit_message(convert.main, [config, str(tmp_path / 'list.pth'), out])
    assert 'holds a list, not a checkpoint dict' in message and 'EMA' not in message
    message = exit_message(convert.main, [config, str(tmp_path / 'mmengine.pth'), out])
    assert 'is not an official VMamba classification checkpoint' in message and 'no conversion needed' in message
    assert 'EMA' not in message
    message = exit_message(convert.main, [config, str(tmp_path / 'raw_only.pth'), out])
    assert "needs the 'model_ema' entry" in message and 'Use the other weights: --weights raw.' in message
    assert 'cfg-options' not in message
    message = exit_message(convert.main, [config, str(tmp_path / 'raw_only.pth'),
                                          str(tmp_path / 'missing' / 'out.pth'), '--weights', 'raw'])
    assert f'The output folder {tmp_path / "missing"} does not exist' in message


# ----------------------------------------------------------------------------------- data files
def test_a_truncated_label_map_is_named(train, tmp_path):
    from vmamba.demo.ade20k import generate_demo_ade20k
    data = tmp_path / 'data'
    generate_demo_ade20k(data, num_train=4, num_val=1)
    label = sorted((data / 'annotations' / 'training').iterdir())[0]
    label.write_bytes(label.read_bytes()[:200])
    config = write_config(tmp_path, 'seg', data, length=1, extra='''
train_dataloader.update(batch_size=4)
''')
    message = exit_message(train.main, [config, '--work-dir', str(tmp_path / 'w'), *names('png')])
    # Found by the data check before training (vmamba/tasks/data_quality.py), else by the data loader.
    assert (f'seg_map_path={label}' in message or f'{label}: label map cannot be decoded' in message) \
        and 'truncated' in message


def test_a_broken_annotation_json_is_named(tmp_path):
    from mmengine.registry import init_default_scope

    from vmamba.engine.exact_resume import DataFileError, TrackedDataset
    (tmp_path / 'ann.json').write_text('{"images": [{"id": 1,')
    init_default_scope('mmdet')
    with pytest.raises(DataFileError) as info:
        TrackedDataset(dict(type='CocoDataset', data_root=str(tmp_path), ann_file='ann.json', pipeline=[]))
    assert f'annotation file {tmp_path / "ann.json"}' in str(info.value) and 'not valid JSON' in str(info.value)


# ----------------------------------------------------------------------------------- configs
def test_config_mistakes_are_one_line(train, tmp_path):
    config = write_config(tmp_path, 'cls', tmp_path / 'data')
    message = exit_message(train.main, [config, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
                                        'model.backbone.archh=tiny'])
    assert "model.backbone.archh: VMamba takes no argument 'archh'. Did you mean arch?" in message
    (tmp_path / 'no_model.py').write_text("default_scope = 'mmseg'\ntrain_cfg = dict(max_iters=1)\n")
    assert "defines no 'model'" in exit_message(train.main, [str(tmp_path / 'no_model.py')])
    (tmp_path / 'ocr.py').write_text("default_scope = 'mmocr'\nmodel = dict(type='DBNet')\n")
    message = exit_message(train.main, [str(tmp_path / 'ocr.py')])
    assert "default_scope='mmocr'" in message and 'mmdet (detection)' in message
    assert 'Config file not found' in exit_message(train.main, [str(tmp_path / 'nope.py')])


def test_a_one_epoch_run_of_the_classification_demo(train, tmp_path, capsys):
    """The demo's cosine phase begins at epoch 1: with max_epochs=1 it is left out, and the run trains."""
    config = osp.join(REPO, 'configs', 'classification', 'vmamba_mini_demo.py')
    root = str(tmp_path / 'data')
    train.main([config, '--work-dir', str(tmp_path / 'w'), '--cfg-options', 'train_cfg.max_epochs=1',
                'model.backbone.arch.depths=[1,1,1,1]', 'train_dataloader.batch_size=12',
                'default_hooks.checkpoint.save_best=None', 'val_cfg=None', 'val_dataloader=None',
                'val_evaluator=None', f'experiment_name=oneepoch', 'visualizer.name=oneepoch',
                *[f'{k}.dataset.{v}' for k in ('train_dataloader', 'test_dataloader')
                  for v in (f'data_root={root}', 'demo_cfg.train_per_class=2', 'demo_cfg.val_per_class=1')]])
    assert 'param_scheduler[1] (CosineAnnealingLR) begins at epoch 1, when this 1-epoch run is over' in \
        capsys.readouterr().err
    assert sorted(losses(tmp_path / 'w')) == [1]
    assert osp.isfile(tmp_path / 'w' / 'epoch_1.pth')


def test_vmamba_names_a_wrong_input_dtype():
    from vmamba.models import VMamba
    model = VMamba(arch=dict(dims=8, depths=(1, 1, 1, 1)), out_indices=(3,))
    for dtype in (torch.uint8, torch.float64):
        with pytest.raises(TypeError, match=f'VMamba expects a float image tensor of dtype torch.float32 .* got '
                                            f'{dtype}'):
            model(torch.zeros(1, 3, 32, 32, dtype=dtype))
    assert model(torch.zeros(1, 3, 32, 32))[0].shape == (1, 64, 1, 1)
