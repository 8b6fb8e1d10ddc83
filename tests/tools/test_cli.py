"""tools/train.py and tools/test.py: how the command line lands in the config, and the clear errors.

Everything here stops before a Runner is built (or builds nothing), so it runs in-process and fast; the
training paths themselves are exercised in tests/detection/test_det_e2e.py and test_distributed.py.
"""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from vmamba.engine.exact_resume import StepSeedHook
from vmamba.errors import ToolError
from vmamba.tasks import data_checks, distributed
from repo_testlib import REPO, subprocess_env

REAL = osp.join(REPO, 'configs', 'detection', 'maskrcnn_vmamba_tiny_1x.py')
DEMO = osp.join(REPO, 'configs', 'detection', 'maskrcnn_vmamba_tiny_demo.py')


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def exit_message(func, argv):
    with pytest.raises(SystemExit) as info:
        func(argv)
    assert isinstance(info.value.code, str), 'expected an error message, not a bare exit status'
    return info.value.code


def test_missing_coco_names_the_layout_and_the_demo(train, empty_cwd):
    message = exit_message(train.main, [REAL])
    for path in ('data/coco/annotations/instances_train2017.json', 'data/coco/train2017/',
                 'data/coco/annotations/instances_val2017.json', 'data/coco/val2017/'):
        assert path in message
    assert 'train_dataloader' in message and 'val_dataloader' in message
    assert 'maskrcnn_vmamba_tiny_demo.py' in message and 'data_root' in message
    assert not (empty_cwd / 'work_dirs').exists(), 'nothing should run before the data check'


def test_missing_coco_in_test_tool(test_tool, empty_cwd):
    ckpt = empty_cwd / 'model.pth'
    torch.save({}, ckpt)
    message = exit_message(test_tool.main, [REAL, str(ckpt)])
    assert 'data/coco/annotations/instances_val2017.json' in message and 'test_dataloader' in message


def test_missing_pretrained_checkpoint_says_where_and_how(empty_cwd):
    cfg = Config.fromfile(REAL)
    with pytest.raises(ToolError) as info:
        data_checks.check_pretrained(cfg)
    message = str(info.value)
    assert 'checkpoints/vssm1_tiny_0230s_ckpt_epoch_264.pth' in message
    assert 'model.backbone.init_cfg=None' in message and 'model.backbone.init_cfg.checkpoint=' in message
    cfg.model.backbone.init_cfg = None
    data_checks.check_pretrained(cfg)  # from scratch: nothing to check


@pytest.mark.skipif(torch.cuda.is_available(), reason='the message is for CPU-only machines')
def test_amp_without_cuda_is_a_clear_error(train, empty_cwd):
    message = exit_message(train.main, [DEMO, '--amp'])
    assert '--amp needs a CUDA GPU' in message


def test_command_line_lands_in_config(train, empty_cwd):
    args = train.parse_args([REAL, '--auto-scale-lr', '--resume', '--cfg-options', 'train_dataloader.batch_size=3'])
    cfg = train.build_config(args)
    assert cfg.auto_scale_lr.enable is True
    assert cfg.resume is True and cfg.load_from is None  # --resume alone: latest checkpoint of the work dir
    assert cfg.train_dataloader.batch_size == 3
    assert cfg.work_dir == osp.join('./work_dirs', 'maskrcnn_vmamba_tiny_1x')
    assert cfg.launcher == 'none'
    assert any(h['type'] == 'StepSeedHook' for h in cfg.custom_hooks)

    ckpt = empty_cwd / 'epoch_3.pth'
    ckpt.write_bytes(b'')
    cfg = train.build_config(train.parse_args([REAL, '--resume', str(ckpt), '--work-dir', 'out']))
    assert cfg.resume is True and cfg.load_from == str(ckpt) and cfg.work_dir == 'out'
    # torchrun-style worker options: persistent_workers with num_workers=0 is dropped, not an error
    cfg = train.build_config(train.parse_args([REAL, '--cfg-options', 'train_dataloader.num_workers=0']))
    assert cfg.train_dataloader.persistent_workers is False


def test_bad_resume_path_and_auto_scale_lr_without_base(train, empty_cwd):
    assert 'no checkpoint file' in exit_message(train.main, [REAL, '--resume', 'nope.pth'])
    bare = empty_cwd / 'bare.py'
    bare.write_text("default_scope = 'mmdet'\n")
    assert 'base_batch_size' in exit_message(train.main, [str(bare), '--auto-scale-lr'])


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')
def test_pytorch_launcher_without_torchrun_env(train, empty_cwd, monkeypatch):
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(key, raising=False)
    cfg = train.build_config(train.parse_args([DEMO, '--launcher', 'pytorch']))
    with pytest.raises(ToolError, match='torchrun'):
        distributed.setup_distributed(cfg)
    cfg = train.build_config(train.parse_args([DEMO, '--launcher', 'slurm']))
    with pytest.raises(ToolError, match='not supported'):
        distributed.setup_distributed(cfg)


def test_test_tool_options(test_tool, empty_cwd):
    ckpt = empty_cwd / 'model.pth'
    ckpt.write_bytes(b'')
    args = test_tool.parse_args([DEMO, str(ckpt), '--tta', '--show-dir', 'painted', '--out', 'preds.pkl'])
    cfg = test_tool.build_config(args)
    assert cfg.load_from == str(ckpt)
    assert cfg.model.type == 'DetTTAModel' and cfg.model.module.type == 'MaskRCNN'
    tta = cfg.test_dataloader.dataset.pipeline[-1]
    assert tta.type == 'TestTimeAug'
    assert [t['prob'] for t in tta.transforms[0]] == [1.0, 0.0]
    assert {'flip', 'flip_direction'} <= set(tta.transforms[1][0]['meta_keys'])
    assert cfg.default_hooks.visualization.draw is True
    assert cfg.default_hooks.visualization.test_out_dir == 'painted'
    assert 'pkl' in exit_message(test_tool.main, [DEMO, str(ckpt), '--out', 'preds.json'])
    assert 'checkpoint not found' in exit_message(test_tool.main, [DEMO, 'missing.pth'])


def test_tools_import_no_task_package():
    """The tools pick the codebase from the config; importing them must not pull in mmdet/mmseg/mmpretrain."""
    import subprocess
    import sys
    code = ('import importlib.util, sys\n'
            f'for name in ("train", "test"):\n'
            f'    spec = importlib.util.spec_from_file_location(name, {REPO!r} + f"/tools/{{name}}.py")\n'
            '    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n'
            'print(sorted(m for m in ("mmdet", "mmseg", "mmpretrain") if m in sys.modules))\n')
    env = subprocess_env()
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == '[]'


def test_step_seed_hook_makes_random_state_a_function_of_the_iteration():
    import random
    import types

    import numpy as np

    def draws(seed, it, diff_rank_seed=False):
        runner = types.SimpleNamespace(seed=seed, iter=it, _randomness_cfg=dict(diff_rank_seed=diff_rank_seed))
        StepSeedHook().after_train_iter(runner, 0)
        return torch.rand(3).tolist(), np.random.rand(), random.random()

    torch.rand(5), np.random.rand(7), random.random()  # whatever came before does not matter
    first = draws(0, 10)
    torch.rand(11)
    assert draws(0, 10) == first
    assert draws(0, 11) != first and draws(1, 10) != first
    assert draws(0, 10, diff_rank_seed=True) == first  # a single process is rank 0
