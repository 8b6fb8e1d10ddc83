"""A mistyped ``--cfg-options`` key or value ends in the one ``error:`` line the README promises
(vmamba/tasks/config_check.py): the optimizer is built inside ``runner.train()``, after the checks that
``build_runner`` makes, and a text value where the config has a number failed deep inside torch."""
import pytest

from reliability_lib import losses, write_config


@pytest.fixture
def config(tmp_path):
    return write_config(tmp_path, 'cls_iter', tmp_path / 'data', length=1, interval=1)


def test_a_mistyped_optimizer_key_names_the_key_and_the_close_one(train, config, tmp_path):
    work = tmp_path / 'key'
    with pytest.raises(SystemExit) as stop:
        train.main([config, '--work-dir', str(work), '--cfg-options', 'optim_wrapper.optimizer.lrr=0.1',
                    'experiment_name=options_key', 'visualizer.name=options_key'])
    assert str(stop.value.code) == ("error: optim_wrapper.optimizer.lrr: AdamW takes no argument 'lrr'. "
                                    'Did you mean lr? Fix the config or the --cfg-options entry.')
    assert not losses(work)


def test_text_where_the_config_has_a_number_stops_before_anything_is_built(train, config, tmp_path):
    work = tmp_path / 'value'
    with pytest.raises(SystemExit) as stop:
        train.main([config, '--work-dir', str(work), '--cfg-options', 'optim_wrapper.optimizer.lr=1e-3x'])
    assert str(stop.value.code) == ('error: --cfg-options optim_wrapper.optimizer.lr=1e-3x: the config has a number '
                                    'there (0.001), not text. Give a number (e.g. optim_wrapper.optimizer.lr=0.001).')
    assert not work.exists()
