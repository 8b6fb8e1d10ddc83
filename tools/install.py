"""Install vmamba and its tested, pinned OpenMMLab stack into the current Python environment.

    python tools/install.py            # everything (idempotent: a second run takes seconds)
    python tools/install.py --no-mm    # only torch + triton + mmengine + numba + vmamba (the bare model)
    python tools/install.py --deploy   # also onnx + onnxruntime + onnxscript (tools/deploy/export_onnx.py)

What it does, in order:
1. build tools: setuptools>=77.0.3,<82 (mmcv's setup.py and mmengine import pkg_resources, removed in 82),
   wheel, ninja, psutil, pytest.
2. torch: an installed torch is kept (GPU users bring their own CUDA build); otherwise torch 2.14.1 +
   torchvision 0.29.1. A torchvision matching the installed torch is added if missing.
3. opencv-python-headless (before mmcv), mmengine 0.10.7, and numba (the compiled CPU scan, wheels only;
   ``--no-numba`` skips it and CPU tensors use the chunked PyTorch scan).
4. mmcv 2.1.0 with its compiled ops. PyPI only has the sdist, so: reuse a cached wheel built for this
   exact torch + Python (+ CUDA) if one exists (``$VMAMBA_WHEEL_CACHE``, ``~/.cache/vmamba/wheels``, or the
   project's ``../shared/wheels``), else build it from source (``MMCV_WITH_OPS=1``, no build isolation,
   ``-std=c++17`` raised to ``-std=c++20`` for torch >= 2.14) and cache the wheel for next time.
5. mmdet 3.3.0, mmsegmentation 1.2.2, mmpretrain 1.2.0, pycocotools, ftfy, regex, with torch/mmcv
   pinned so pip never swaps them.
6. with ``--deploy``: onnx, onnxruntime and onnxscript (the ``deploy`` extra), for ONNX export and its check.
7. vmamba itself, editable.
"""
import argparse
import glob
import importlib.metadata as md
import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH, TORCHVISION = '2.14.1', '0.29.1'
MMCV = '2.1.0'
BASE = ['setuptools>=77.0.3,<82', 'wheel', 'ninja', 'psutil', 'pytest']
MM_CORE = ['opencv-python-headless', 'mmengine==0.10.7', 'safetensors']
CPU_JIT = ['numba>=0.61']
DEPLOY = ['onnx>=1.16', 'onnxruntime>=1.18', 'onnxscript>=0.2']


def _task_adapters():
    """vmamba/tasks/adapters.py, read by path: importing the vmamba package would need torch already."""
    spec = importlib.util.spec_from_file_location('_vmamba_task_adapters',
                                                  os.path.join(REPO, 'vmamba', 'tasks', 'adapters.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ADAPTERS = _task_adapters()
#: The task codebases and the packages their metrics and datasets need (one row per task in the adapters).
MM_TASKS = ADAPTERS.install_requirements()


def log(msg):
    print(f'[vmamba install] {msg}', flush=True)


def pip(*args):
    cmd = [sys.executable, '-m', 'pip', 'install', '--disable-pip-version-check', *args]
    log(' '.join(cmd[2:]))
    subprocess.check_call(cmd)


def version(dist):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def python_ok(code):
    """Run ``code`` in a fresh interpreter (imports of compiled packages must not poison this one)."""
    return subprocess.run([sys.executable, '-c', code], capture_output=True).returncode == 0


def torch_info():
    out = subprocess.check_output([sys.executable, '-c', (
        'import torch, os; cuda = torch.version.cuda if (torch.cuda.is_available() or '
        'os.environ.get("FORCE_CUDA") == "1") else None; print(torch.__version__, cuda or "cpu")')], text=True)
    full, flavour = out.split()
    return full, full.split('+')[0], flavour


def install_torch():
    if version('torch') is None:
        pip(f'torch=={TORCH}', f'torchvision=={TORCHVISION}')
    elif version('torchvision') is None:
        major, minor, *rest = version('torch').split('+')[0].split('.')
        match = f'0.{int(minor) + 15}.{rest[0] if rest else 0}' if major == '2' else None
        log(f'torch {version("torch")} is installed and kept; adding torchvision {match} (mmpretrain needs it)')
        try:
            pip('--no-deps', f'torchvision=={match}')
        except subprocess.CalledProcessError:
            log('WARNING: no matching torchvision; classification (mmpretrain) will not work until you '
                'install the torchvision that matches your torch.')
    if version('triton') is None and sys.platform == 'linux':
        pip('triton')


def wheel_dirs(torch_base, flavour):
    """Where a prebuilt mmcv wheel for this torch may be (first: where we cache our builds)."""
    name = f'torch-{torch_base}' + ('' if flavour == 'cpu' else f'-cu{flavour.replace(".", "")}')
    cache = os.environ.get('VMAMBA_WHEEL_CACHE', os.path.expanduser('~/.cache/vmamba/wheels'))
    return [os.path.join(cache, name), os.path.join(REPO, '..', 'shared', 'wheels', name)]


def mmcv_ok():
    return version('mmcv') == MMCV and python_ok('import mmcv.ops')


def build_mmcv(dest, torch_base):
    """Build the mmcv wheel from the PyPI sdist into ``dest`` (12-25 min on 2 cores, CPU ops)."""
    os.makedirs(dest, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.check_call([sys.executable, '-m', 'pip', 'download', '--no-deps', '--no-binary', ':all:',
                               f'mmcv=={MMCV}', '-d', tmp])
        with tarfile.open(glob.glob(os.path.join(tmp, 'mmcv-*.tar.gz'))[0]) as tar:
            tar.extractall(tmp)
        src = os.path.join(tmp, f'mmcv-{MMCV}')
        if tuple(int(v) for v in torch_base.split('.')[:2]) >= (2, 14):
            # torch 2.14's headers need C++20; mmcv 2.1.0 hard-codes C++17.
            setup = os.path.join(src, 'setup.py')
            with open(setup) as f:
                text = f.read()
            with open(setup, 'w') as f:
                f.write(text.replace('-std=c++17', '-std=c++20'))
        env = dict(os.environ, MMCV_WITH_OPS='1', MAX_JOBS=os.environ.get('MAX_JOBS', str(os.cpu_count() or 2)))
        log(f'building mmcv {MMCV} from source into {dest} (this takes 12-25 minutes, once)')
        subprocess.check_call([sys.executable, '-m', 'pip', 'wheel', '--no-build-isolation', '--no-deps',
                               '-w', dest, src], env=env)


def install_mmcv():
    if mmcv_ok():
        log(f'mmcv {MMCV} with ops already installed')
        return
    _, torch_base, flavour = torch_info()
    tag = f'cp{sys.version_info.major}{sys.version_info.minor}'
    dirs = wheel_dirs(torch_base, flavour)
    for d in dirs:
        for whl in sorted(glob.glob(os.path.join(d, f'mmcv-{MMCV}-{tag}-{tag}-*.whl'))):
            log(f'trying cached wheel {whl}')
            pip('--no-deps', '--force-reinstall', whl)
            if mmcv_ok():
                return
            log(f'{whl} does not load with this torch; ignoring it')
    build_mmcv(dirs[0], torch_base)
    pip('--no-deps', '--force-reinstall', *glob.glob(os.path.join(dirs[0], f'mmcv-{MMCV}-{tag}-*.whl')))
    if not mmcv_ok():
        sys.exit('mmcv was built but `import mmcv.ops` fails; see the build log above.')


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--no-mm', action='store_true', help='skip mmcv/mmdet/mmseg/mmpretrain')
    parser.add_argument('--no-numba', action='store_true', help='skip numba (CPU scans then use the torch backend)')
    parser.add_argument('--deploy', action='store_true', help='also install onnx, onnxruntime and onnxscript')
    args = parser.parse_args()

    pip(*BASE)
    install_torch()
    pip(*MM_CORE, *([] if args.no_numba else CPU_JIT), *(DEPLOY if args.deploy else []))
    if not args.no_mm:
        install_mmcv()
        full, _, _ = torch_info()
        with tempfile.NamedTemporaryFile('w', suffix='.txt', delete=False) as f:
            # Keep the torch and mmcv we have: pip must never replace them while resolving the task packages.
            f.write(f'torch=={full}\nmmcv=={MMCV}\nsetuptools<82\n')
        try:
            pip('-c', f.name, *MM_TASKS)
        finally:
            os.unlink(f.name)
    pip('--no-deps', '--no-build-isolation', '-e', REPO)
    tasks = ''.join(f', {a.scope}' for a in ADAPTERS.ADAPTERS)
    check = ('import vmamba' + ('' if args.no_mm else ', mmcv.ops' + tasks) +
             ('' if args.no_numba else ', numba') + (', onnx, onnxruntime' if args.deploy else ''))
    if not python_ok(check):
        subprocess.call([sys.executable, '-c', check])
        sys.exit('install finished but the imports above fail')
    packages = [a.requirement.split('==')[0] for a in ADAPTERS.ADAPTERS]
    log('done: ' + ', '.join(f'{d} {version(d)}' for d in
                             ['torch', 'torchvision', 'triton', 'mmengine', 'numba', 'mmcv', *packages,
                              'onnx', 'onnxruntime'] if version(d)))


if __name__ == '__main__':
    main()
