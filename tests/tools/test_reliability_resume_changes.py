"""``--resume`` with a config that differs from the checkpoint's run (vmamba/engine/resume_changes.py):
the differences are listed and stop the run; ``--resume-changed`` continues with the new values, which the
optimizer really uses (mmengine alone restores the checkpoint's learning rate); an unchanged config
resumes as before, with no note.

In-process runs of tools/train.py on the classification demo shrunk to a tiny VMamba (iteration loop,
LinearLR warm-up over 3 iterations from a base learning rate of 0.001)."""
import shutil

import pytest
import torch

from reliability_lib import losses, write_config


@pytest.fixture(scope='module')
def trained(train, tmp_path_factory):
    """A 2-iteration run that wrote iter_2.pth; returns (config, work dir)."""
    root = tmp_path_factory.mktemp('changes')
    config = write_config(root, 'cls_iter', root / 'data', length=2, interval=2)
    work = root / 'first'
    train.main([config, '--work-dir', str(work), '--cfg-options', 'experiment_name=changes_first',
                'visualizer.name=changes_first'])
    return config, work


def _resume(train, trained, tmp_path, name, *extra, options=()):
    config, first = trained
    work = tmp_path / name
    work.mkdir()
    shutil.copy(first / 'iter_2.pth', work / 'iter_2.pth')
    train.main([config, '--work-dir', str(work), '--resume', *extra, '--cfg-options', 'train_cfg.max_iters=4',
                f'experiment_name=changes_{name}', f'visualizer.name=changes_{name}', *options])
    return work


def test_a_changed_lr_and_batch_size_stop_the_resume_with_both_listed(train, trained, tmp_path):
    with pytest.raises(SystemExit) as stop:
        _resume(train, trained, tmp_path, 'changed', options=['optim_wrapper.optimizer.lr=0.01',
                                                            'train_dataloader.batch_size=2'])
    message = str(stop.value.code)
    assert message.startswith('error: --resume: this config differs')
    assert 'optim_wrapper.optimizer.lr: 0.001 in the checkpoint, 0.01 now' in message
    assert 'train_dataloader.batch_size: 4 in the checkpoint, 2 now' in message
    assert '--resume-changed' in message
    assert not list((tmp_path / 'changed').glob('iter_4.pth'))


def test_resume_changed_trains_with_the_new_lr(train, trained, tmp_path, capsys):
    work = _resume(train, trained, tmp_path, 'accepted', '--resume-changed',
                   options=['optim_wrapper.optimizer.lr=0.01'])
    assert 'optim_wrapper.optimizer.lr: 0.001 in the checkpoint, 0.01 now' in capsys.readouterr().err
    logged = losses(work)
    old = losses(trained[1])
    assert sorted(logged) == [3, 4]
    # The 2-iteration run's warm-up ended with it (mmengine clips it to the run): its lr went 0.0001, 0.00055;
    # mmengine's resume alone would continue at 0.001.
    assert [old[i]['lr'] for i in (1, 2)] == [pytest.approx(0.0001), pytest.approx(0.00055)]
    assert logged[3]['lr'] == pytest.approx(0.01)
    assert logged[4]['lr'] == pytest.approx(0.01)
    ckpt = torch.load(work / 'iter_4.pth', map_location='cpu', weights_only=False)
    groups = ckpt['optimizer']['param_groups']
    assert {g['initial_lr'] for g in groups} == {0.01}
    assert {round(g['lr'], 12) for g in groups} == {0.01}
    assert ckpt['meta']['world_size'] == 1


def test_an_unchanged_config_resumes_without_a_note(train, trained, tmp_path, capsys):
    work = _resume(train, trained, tmp_path, 'same')
    err = capsys.readouterr().err
    assert 'differs' not in err and '--resume-changed' not in err
    logged = losses(work)
    assert sorted(logged) == [3, 4]
    assert logged[4]['lr'] == pytest.approx(0.001)


def test_world_size_model_and_seed_differences_are_listed(trained):
    """The comparison itself, on the checkpoint's meta: a world size of 2 stored by the hook, a wider model
    and another seed (which the block says is not applied)."""
    from mmengine.config import Config

    from vmamba.engine.resume_changes import check_changes, config_differences
    config, first = trained
    ckpt = torch.load(first / 'iter_2.pth', map_location='cpu', weights_only=False)
    cfg = Config.fromfile(config)
    assert config_differences(cfg, ckpt, seed=0) == []
    ckpt['meta']['world_size'] = 2
    cfg.merge_from_dict({'model.backbone.arch.dims': 16})
    assert config_differences(cfg, ckpt, seed=7) == [('model.backbone.arch.dims', 8, 16), ('world size', 2, 1),
                                                     ('randomness.seed', 0, 7)]
    lines = []
    check_changes(cfg, ckpt, 'iter_2.pth', seed=7, accept=True, log=lines.append)
    assert "randomness.seed: 0 in the checkpoint, 7 now (the checkpoint's seed is kept" in lines[0]
