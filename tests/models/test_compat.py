"""`import vmamba` makes mmengine load its own checkpoints under torch >= 2.6 (weights_only default)."""
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint

import vmamba  # noqa: F401  (applies the fix)


def test_mmengine_checkpoint_with_python_objects_loads(tmp_path):
    hub = MessageHub.get_instance('vmamba_compat_test')
    hub.update_scalar('train/loss', 1.5)
    ckpt = {'meta': {'epoch': 3}, 'state_dict': {'w': torch.arange(4.0)}, 'message_hub': hub.state_dict()}
    path = tmp_path / 'epoch_3.pth'
    torch.save(ckpt, path)
    if tuple(int(v) for v in torch.__version__.split('+')[0].split('.')[:2]) >= (2, 6):
        with pytest.raises(Exception, match='HistoryBuffer|weights_only'):
            torch.load(path)  # what mmengine 0.10.7 does on its own
    loaded = _load_checkpoint(str(path), map_location='cpu')
    assert loaded['meta']['epoch'] == 3 and torch.equal(loaded['state_dict']['w'], torch.arange(4.0))
    assert isinstance(loaded['message_hub']['log_scalars']['train/loss'], HistoryBuffer)
    with pytest.raises(FileNotFoundError):
        CheckpointLoader.load_checkpoint(str(tmp_path / 'missing.pth'))
