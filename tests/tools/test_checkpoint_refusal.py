"""Every tool that reads a checkpoint refuses a malicious pickle in one line before any of it runs
(tools/test.py, tools/train.py with load_from and --resume, convert_checkpoint, deploy/export_onnx,
analysis/erf), opts in with --trust-checkpoint, and takes the .safetensors files the converter writes."""
import json
import os
import time

import pytest
import torch

from vmamba.models import VSSM
from vmamba.models.checkpoint_file import TRUST_ENV, load_checkpoint_file, safetensors_metadata

from checkpoint_testlib import malicious_file, official_file
from reliability_lib import exit_message, names, write_config
from repo_testlib import CONFIGS, run_tool, tool

REFUSED = 'error: Refused to load the checkpoint {path}: it asks for posix.system'
SHRUNK_ARCH = dict(dims=8, depths=(1, 1, 1, 1))  # the backbone of reliability_lib's shrunk classification config


@pytest.fixture
def evil(tmp_path, monkeypatch):
    monkeypatch.setenv(TRUST_ENV, '0')  # no inherited opt-in; and --trust-checkpoint's change is undone after
    marker = tmp_path / 'MARKER'
    return malicious_file(tmp_path / 'evil.pth', marker), marker


@pytest.fixture
def cls_config(tmp_path):
    return write_config(tmp_path, 'cls', tmp_path / 'data')


def test_test_tool_stops_with_one_line(evil, cls_config, tmp_path):
    path, marker = evil
    status, output = run_tool('test', cls_config, path, '--work-dir', tmp_path / 't', **{TRUST_ENV: '0'})
    assert status == 1, output
    last = output.strip().splitlines()[-1]
    assert last.startswith(REFUSED.format(path=path)) and '--trust-checkpoint' in last, output[-2000:]
    assert 'Traceback' not in output and not marker.exists()


def test_train_tool_refuses_load_from_and_resume(evil, cls_config, tmp_path):
    path, marker = evil
    train = tool('train')
    message = exit_message(train.main, [cls_config, '--work-dir', str(tmp_path / 'w1'), '--cfg-options',
                                        f'load_from={path}', 'experiment_name=loadfrom',
                                        'visualizer.name=loadfrom'])
    assert message.startswith(REFUSED.format(path=path)), message
    # auto-resume: the malicious file is the newest checkpoint of the work dir; an intact older one sits beside it
    work = tmp_path / 'w2'
    work.mkdir()
    torch.save({'meta': {'epoch': 1, 'iter': 3, 'seed': 0}, 'state_dict': {}, 'optimizer': {}, 'message_hub': {}},
               work / 'epoch_1.pth')
    newest = malicious_file(work / 'epoch_2.pth', marker)
    later = time.time() + 5
    os.utime(newest, (later, later))
    message = exit_message(train.main, [cls_config, '--work-dir', str(work), '--resume', *names('autoresume')])
    assert message.startswith(REFUSED.format(path=newest)), message
    message = exit_message(train.main, [cls_config, '--work-dir', str(work), '--resume', str(path),
                                        *names('resumepath')])
    assert message.startswith(REFUSED.format(path=path)), message
    assert not marker.exists()


def test_converter_refuses_then_opts_in(evil, capsys, tmp_path):
    path, marker = evil
    convert = tool('convert_checkpoint')
    config = os.path.join(CONFIGS, 'classification', 'vmamba_tiny_in1k.py')
    out = str(tmp_path / 'out.pth')
    message = exit_message(convert.main, [config, str(path), out])
    assert message.startswith(REFUSED.format(path=path)) and not marker.exists()
    capsys.readouterr()
    message = exit_message(convert.main, [config, str(path), out, '--trust-checkpoint'])
    assert marker.exists(), 'the opt-in loads the file as it is (its payload runs)'
    assert 'is not an official VMamba classification checkpoint' in message
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith(f'warning: {path}: loading with a full unpickle'), warning


def test_exporter_and_analysis_tool_refuse(evil, tmp_path):
    path, marker = evil
    export_tool = tool('deploy/export_onnx')
    message = exit_message(export_tool.main, [str(SHRUNK_ARCH), '--num-classes', '6', '--checkpoint', str(path),
                                              '--out', str(tmp_path / 'm.onnx')])
    assert message.startswith(REFUSED.format(path=path)), message
    erf = tool('analysis/erf')
    message = exit_message(erf.main, ['tiny', '--checkpoint', f'tiny={path}', '--size', '64', '--num-images', '1',
                                      '--device', 'cpu', '--out', str(tmp_path / 'erf.png')])
    assert message.startswith(REFUSED.format(path=path)), message
    assert not marker.exists() and not (tmp_path / 'm.onnx').exists()


def test_safetensors_from_the_converter_work_everywhere(cls_config, tmp_path, monkeypatch):
    monkeypatch.setenv(TRUST_ENV, '0')
    torch.manual_seed(0)
    raw, ema = VSSM(arch=SHRUNK_ARCH, num_classes=6), VSSM(arch=SHRUNK_ARCH, num_classes=6)
    src = official_file(tmp_path / 'official.pth', raw.state_dict(), ema.state_dict())
    convert = tool('convert_checkpoint')
    pth, st = str(tmp_path / 'ema.pth'), str(tmp_path / 'ema.safetensors')
    convert.main([cls_config, str(src), pth])
    convert.main([cls_config, str(src), st])
    expected, got = load_checkpoint_file(pth)['state_dict'], load_checkpoint_file(st)
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype and got[key].numpy().tobytes() == value.numpy().tobytes(), key
    assert torch.equal(got['head.fc.weight'], ema.state_dict()['classifier.head.weight'])
    meta = safetensors_metadata(st)
    assert (meta['variant'], meta['weights'], meta['model']) == ('custom', 'ema', 'ImageClassifier')
    assert json.loads(meta['arch'])['dims'] == 8 and meta['source'] == str(src)
    # tools/test.py (load_from): the same metrics from either file (weights=raw: a converted .pth holds no
    # ema_state_dict, and the hook's default asks for one)
    test_tool = tool('test')
    metrics = [test_tool.main([cls_config, f, '--work-dir', str(tmp_path / f'test{i}'), *names(f'st{i}'),
                               'default_hooks.checkpoint_loader.weights=raw'])
               for i, f in enumerate((pth, st))]
    assert metrics[0] == metrics[1] and 'accuracy/top1' in metrics[0]
    # the exporter's and the analysis tools' model builders
    from vmamba.analysis import build_subject
    from vmamba.deploy import export
    subject = build_subject(cls_config, checkpoint=st)
    assert torch.equal(subject.model.state_dict()['backbone.patch_embed.0.weight'],
                       ema.state_dict()['patch_embed.0.weight'])
    backbone, _ = export.build_model(cls_config, checkpoint=st)
    assert torch.equal(backbone.state_dict()['layers.0.blocks.0.op.A_logs'],
                       ema.state_dict()['layers.0.blocks.0.op.A_logs'])
