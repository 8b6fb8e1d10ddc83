"""tools/demo.py, the README's main job, on a shrunken data set: it prints the model summary, trains the
detection demo config, and reports a numeric mAP and where the logs and checkpoints are."""
import os
import os.path as osp
import re
import subprocess
import sys

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_demo_prints_summary_map_and_paths(tmp_path):
    root = str(tmp_path / 'data') + '/'
    work = str(tmp_path / 'work')
    options = [f'{loader}.dataset.data_root={root}' for loader in ('train_dataloader', 'val_dataloader')]
    options += [f'train_dataloader.dataset.generate.{k}={v}' for k, v in
                dict(num_train=2, num_val=2, image_size=64).items()]
    options += [f'val_dataloader.dataset.generate.{k}={v}' for k, v in
                dict(num_train=2, num_val=2, image_size=64).items()]
    options += [f'val_evaluator.ann_file={root}annotations/instances_val.json', 'train_dataloader.batch_size=2']
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'demo.py'), '--epochs', '1', '--work-dir', work,
                           '--cfg-options', *options], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r'VMamba-T \(tiny_s1l8\) classifier: [\d,]+ parameters', out)
    assert 'stage 3 feature map: (1, 768, 7, 7)' in out
    for name in ('box', 'mask'):
        value = re.search(rf'^{name} mAP: (\S+)', out, re.M)
        assert value and 0.0 <= float(value.group(1)) <= 1.0, out[-2000:]
    assert f'checkpoints: {work}' in out and osp.isfile(osp.join(work, 'epoch_1.pth'))
    logs = re.search(r'^logs:\s+(\S+)', out, re.M).group(1)
    assert osp.isdir(logs) and any(f.endswith('.log') for f in os.listdir(logs))
