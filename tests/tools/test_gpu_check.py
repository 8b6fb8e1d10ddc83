"""The GPU check cannot rot: its CPU dry run (the Triton interpreter, tiny shapes, the same three steps and the same
final table) runs here with the OpenMMLab task packages hidden, as on a GPU machine that has only torch and triton
(mmengine stays: there it comes from the wheels, whose unpacking is tested on its own)."""
import json
import os
import subprocess
import sys
import zipfile

from repo_testlib import REPO, subprocess_env, tool

gpu_check = tool('analysis/gpu_check')


def test_dry_run_without_openmmlab_task_packages(tmp_path):
    out = tmp_path / 'logs'
    env = {k: v for k, v in subprocess_env(VMAMBA_GPU_CHECK_OUT=str(out)).items()
           if k not in ('TRITON_INTERPRET', 'VMAMBA_SCAN_BACKEND')}
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'analysis', 'gpu_check.py'), '--dry-run',
                           '--hide', 'mmcv', 'mmdet', 'mmseg', 'mmpretrain'], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    assert 'hidden from the steps: mmcv, mmdet, mmseg, mmpretrain' in text
    table = text[text.index('| item'):]
    assert table.count('\n|') >= 4, table  # header rule, ops tests, scan, VMamba-T, Swin-T
    ops = next(line for line in table.splitlines() if line.startswith('| ops tests'))
    assert ' passed' in ops and 'failed' not in ops, ops
    scan = json.loads((out / 'bench_scan.json').read_text())
    assert scan['backend'] == 'triton' and {r['variant'] for r in scan['rows']} == {'fused', 'unfused'}
    assert all(r['fwd_ms'] > 0 and r['fwdbwd_ms'] > 0 for r in scan['rows'])
    models = {r['model']: r for r in json.loads((out / 'models.json').read_text())}
    assert models['tiny']['images_per_s'] > 0
    # mmpretrain is hidden: Swin-T is timm's, or the table says why there is none
    swin = [m for m in models if m.startswith('swin_t')]
    assert swin == ['swin_t (timm)'] or models['swin_t']['reason'].startswith('skipped: swin_t: neither mmpretrain')
    assert any(line.startswith('| swin_t') for line in table.splitlines()), table
    for step in ('ops_tests', 'bench_scan', 'models'):
        assert (out / f'{step}.txt').stat().st_size > 0, step
    assert (out / 'gpu_check.txt').read_text().endswith(table.rstrip('\n') + '\n')


def _wheel(folder, name, requires_python=None, module='pkg'):
    path = folder / name
    dist = '-'.join(name.split('-')[:2])
    with zipfile.ZipFile(path, 'w') as z:
        z.writestr(f'{module}/__init__.py', f'NAME = {name!r}\n')
        z.writestr(f'{dist}.dist-info/METADATA', 'Metadata-Version: 2.1\nName: x\n'
                   + (f'Requires-Python: {requires_python}\n' if requires_python else ''))
    return path


def test_wheels_unpack_the_newest_that_fits(tmp_path):
    wheels = tmp_path / 'wheels'
    wheels.mkdir()
    _wheel(wheels, 'pkg-1.0-py3-none-any.whl')
    _wheel(wheels, 'pkg-2.0-py3-none-any.whl')
    _wheel(wheels, 'pkg-3.0-py3-none-any.whl', requires_python='>=3.99')       # too new for this Python
    _wheel(wheels, 'other-1.0-cp27-cp27m-manylinux1_x86_64.whl', module='other')  # another interpreter
    used = gpu_check.unpack_wheels(str(wheels), str(tmp_path / 'site'))
    assert used == ['pkg-2.0-py3-none-any.whl']
    assert (tmp_path / 'site' / 'pkg' / '__init__.py').read_text() == "NAME = 'pkg-2.0-py3-none-any.whl'\n"
    assert not (tmp_path / 'site' / 'other').exists()
