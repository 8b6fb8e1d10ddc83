"""Install vmamba and one tested, pinned OpenMMLab stack into the current Python environment.

    python tools/install.py                 # everything, upstream OpenMMLab stack (idempotent: a rerun takes seconds)
    python tools/install.py --stack onedl   # the same on OneDL's maintained fork (onedl-mmcv, onedl-mmdetection ...)
    python tools/install.py --no-mm         # only torch + triton + mmengine + numba + vmamba (the bare model)
    python tools/install.py --deploy        # also onnx + onnxruntime + onnxscript (tools/deploy/export_onnx.py)

The two stacks install the same import names (mmcv, mmdet, mmseg ...) under different distribution names; the
pins and the lookup by either name are in ``vmamba/mmstack.py``. Switching stacks in one environment removes
the other stack's distributions first, so no import folder is owned twice.

What it does, in order:
1. build tools: setuptools (below 82 for the upstream stack, whose mmcv setup.py and mmengine import
   pkg_resources), wheel, ninja, psutil, pytest.
2. torch: an installed torch is kept (GPU users bring their own CUDA build); otherwise torch 2.14.1 +
   torchvision 0.29.1. A torchvision matching the installed torch is added if missing.
3. opencv-python-headless (the only OpenCV), the stack's mmengine, safetensors (tensor-only checkpoint files),
   and numba (the compiled CPU scan, wheels only; ``--no-numba`` skips it and CPU tensors use the chunked
   PyTorch scan).
4. mmcv with its compiled ops, first found of: a wheel built earlier for this exact stack, torch, Python and
   CUDA flavour (``$VMAMBA_WHEEL_CACHE/<stack>/torch-<v>[-cu<XY>]/``, or ``../shared/wheels/torch-<v>/``);
   for the fork and a CUDA build of torch, its prebuilt wheel (``--mmcv-find-links``, the fork's index by
   default); else a build from the PyPI sdist (``MMCV_WITH_OPS=1``, no build isolation, ``-std=c++20`` for
   torch >= 2.14), cached for next time.
5. the task codebases (mmdet, mmseg, mmpretrain) and what their metrics need, with torch, mmcv and numpy
   pinned so pip never swaps them. The fork's mmdet, its imaug and its mmseg are installed without their
   declared dependencies (they would add a second OpenCV and downgrade numpy) and their real needs beside.
6. with ``--deploy``: onnx, onnxruntime and onnxscript (the ``deploy`` extra).
7. vmamba itself, editable; then the imports are checked, and that numpy was kept and one OpenCV is installed.
"""
import argparse
import glob
import importlib.metadata as md
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from typing import NamedTuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH, TORCHVISION = '2.14.1', '0.29.1'
BASE = ['wheel', 'ninja', 'psutil', 'pytest']
CPU_JIT = ['numba>=0.61']
DEPLOY = ['onnx>=1.16', 'onnxruntime>=1.18', 'onnxscript>=0.2']
#: The fork's wheel index (the default of its own installer, onedl-mim): one find-links page per CUDA and
#: torch minor release, ``<index>/cu<XYZ>-torch<M><m>0/simple/onedl-mmcv/index.html``.
ONEDL_INDEX = 'https://mmwheels.onedl.ai'
#: (torch minor, CUDA) pairs the fork published onedl-mmcv wheels for, for Python 3.10 and 3.12 (for messages;
#: the index itself is what is tried).
ONEDL_PUBLISHED = (('2.4', '11.8'), ('2.8', '12.8'), ('2.8', '12.9'), ('2.9', '12.9'), ('2.10', '12.9'),
                   ('2.12', '13.0'))
#: How long a CPU-ops build from source takes on 2 cores, said before it starts.
BUILD_MINUTES = {'openmmlab': '12-25', 'onedl': 'about 8'}


def _load(relpath, name):
    """A stdlib-only module of the package, read by path: importing ``vmamba`` would need torch already."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, *relpath.split('/')))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ADAPTERS = _load('vmamba/tasks/adapters.py', '_vmamba_task_adapters')
MMSTACK = _load('vmamba/mmstack.py', '_vmamba_mmstack')


def log(msg):
    print(f'[vmamba install] {msg}', flush=True)


def pip(*args):
    cmd = [sys.executable, '-m', 'pip', 'install', '--disable-pip-version-check', *args]
    log(' '.join(cmd[2:]))
    subprocess.check_call(cmd)


def version(name):
    """Installed version of an import name of the stacks (by either distribution) or of a distribution."""
    if name in MMSTACK.DISTRIBUTIONS:
        found = MMSTACK.installed(name)
        return found and found[1]
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def python_ok(code):
    """Run ``code`` in a fresh interpreter (imports of compiled packages must not poison this one)."""
    return subprocess.run([sys.executable, '-c', code], capture_output=True).returncode == 0


class TorchInfo(NamedTuple):
    full: str          #: torch.__version__, e.g. '2.8.0+cu129'
    base: str          #: without the local tag, '2.8.0'
    cuda: str          #: the CUDA torch was built for ('12.9'), '' for a CPU build
    gpu: bool          #: CUDA ops are to be built: a GPU is visible or FORCE_CUDA=1


def torch_info():
    out = subprocess.check_output([sys.executable, '-c', (
        'import torch, os; print(torch.__version__, torch.version.cuda or "-", '
        'int(torch.cuda.is_available() or os.environ.get("FORCE_CUDA") == "1"))')], text=True)
    full, cuda, gpu = out.split()
    return TorchInfo(full, full.split('+')[0], '' if cuda == '-' else cuda, gpu == '1' and cuda != '-')


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


def switch_stack(stack):
    """Uninstall the other stack's distributions: both would own the same import folders."""
    wanted = {MMSTACK.pin(stack, m)[0] for m in MMSTACK.DISTRIBUTIONS}
    others = [found[0] for found in map(MMSTACK.installed, MMSTACK.DISTRIBUTIONS)
              if found and found[0] not in wanted]
    if others:
        log(f'replacing {", ".join(others)} with the {stack} stack')
        subprocess.check_call([sys.executable, '-m', 'pip', 'uninstall', '-y', *others])


# ------------------------------------------------------------------------------------------ mmcv ---------

class MmcvChoice(NamedTuple):
    kind: str     #: 'cached' (a wheel we or the project built), 'prebuilt' (the fork's) or 'build'
    source: str   #: the wheel file, the find-links page, or (for 'build') the folder the wheel goes to
    reason: str   #: one line for the log


def wheel_key(torch_base, cuda, gpu):
    """The cache folder name: a C++ extension fits one torch release and one CUDA flavour only."""
    return f'torch-{torch_base}' + (f'-cu{cuda.replace(".", "")}' if gpu and cuda else '')


def wheel_dirs(stack, key):
    """Where a wheel built earlier may be: our cache (first: new builds go there), its pre-stack layout, and
    the project's ``../shared/wheels`` (told apart by their file names)."""
    cache = os.environ.get('VMAMBA_WHEEL_CACHE', os.path.expanduser('~/.cache/vmamba/wheels'))
    return [os.path.join(cache, stack, key), os.path.join(cache, key),
            os.path.normpath(os.path.join(REPO, '..', 'shared', 'wheels', key))]


def wheel_pattern(stack, python_tag):
    dist, ver = MMSTACK.pin(stack, 'mmcv')
    return f'{dist.replace("-", "_")}-{ver}-{python_tag}-{python_tag}-*.whl'


def index_page(find_links, torch_base, cuda):
    """The fork's find-links page for a torch minor release and CUDA version (its installer's layout)."""
    major, minor = torch_base.split('.')[:2]
    return f'{find_links.rstrip("/")}/cu{cuda.replace(".", "")}-torch{major}{minor}0/simple/onedl-mmcv/index.html'


def mmcv_choices(stack, torch_base, cuda, gpu, python_tag, find_links=ONEDL_INDEX, cache_dirs=None):
    """Every source of this stack's mmcv for this torch, CUDA and Python, best first: wheels built earlier,
    then the fork's prebuilt wheel, and last a build from source (with the reason nothing else fits)."""
    key = wheel_key(torch_base, cuda, gpu)
    dirs = wheel_dirs(stack, key) if cache_dirs is None else list(cache_dirs)
    pattern = wheel_pattern(stack, python_tag)
    for d in dirs:
        for whl in sorted(glob.glob(os.path.join(d, pattern))):
            yield MmcvChoice('cached', whl, f'a wheel built earlier for {key}, {python_tag}')
    dist, ver = MMSTACK.pin(stack, 'mmcv')
    combo = f'torch {torch_base} + CUDA {cuda}, {python_tag}'
    if stack != 'onedl':
        hint = ' (the onedl stack has prebuilt CUDA wheels: --stack onedl)' if gpu else ''
        reason = f'PyPI has only the source of {dist} {ver}, and no wheel was built earlier for {key}{hint}'
    elif not cuda:
        reason = f'torch {torch_base} is a CPU build and the fork publishes CUDA builds only'
    elif '://' in find_links:
        yield MmcvChoice('prebuilt', index_page(find_links, torch_base, cuda), f'the fork\'s wheel for {combo}')
        published = ', '.join(f'{t}+cu{c}' for t, c in ONEDL_PUBLISHED)
        reason = f'{find_links} has no {dist} {ver} wheel for {combo} (known published: {published}; py3.10/3.12)'
    else:
        page = os.path.dirname(index_page(find_links, torch_base, cuda))
        for whl in sorted(glob.glob(os.path.join(page, pattern))):
            yield MmcvChoice('prebuilt', whl, f'the fork\'s wheel for {combo}')
        reason = f'{find_links} has no {dist} {ver} wheel for {combo}'
    yield MmcvChoice('build', dirs[0], reason)


def select_mmcv(*args, **kwargs):
    """The first of :func:`mmcv_choices`: what the installer takes when it loads."""
    return next(mmcv_choices(*args, **kwargs))


def mmcv_ok(stack):
    return MMSTACK.installed('mmcv') == MMSTACK.pin(stack, 'mmcv') and python_ok('import mmcv.ops')


def build_mmcv(stack, dest, torch, reason):
    """Build the stack's mmcv wheel from its PyPI sdist into ``dest``, with CUDA ops when ``torch.gpu``."""
    dist, ver = MMSTACK.pin(stack, 'mmcv')
    if torch.gpu and not (shutil.which('nvcc') or os.environ.get('CUDA_HOME')):
        sys.exit(f'building {dist} with CUDA ops needs nvcc (CUDA {torch.cuda}, as torch) on PATH or CUDA_HOME; '
                 f'install the CUDA toolkit, or a torch the fork publishes wheels for and --stack onedl.')
    ops = f'CUDA ops for CUDA {torch.cuda} (needs nvcc; far longer than' if torch.gpu else 'CPU ops ('
    log(f'building {dist} {ver} from source: {reason}. With {ops} {BUILD_MINUTES[stack]} minutes on 2 cores '
        f'for CPU ops), once: the wheel is cached in {dest}')
    os.makedirs(dest, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.check_call([sys.executable, '-m', 'pip', 'download', '--no-deps', '--no-binary', ':all:',
                               f'{dist}=={ver}', '-d', tmp])
        with tarfile.open(glob.glob(os.path.join(tmp, '*.tar.gz'))[0]) as tar:
            tar.extractall(tmp)
        src = next(p for p in glob.glob(os.path.join(tmp, f'*-{ver}')) if os.path.isdir(p))
        if tuple(int(v) for v in torch.base.split('.')[:2]) >= (2, 14):
            # torch 2.14's headers need C++20; both mmcv releases hard-code C++17.
            setup = os.path.join(src, 'setup.py')
            with open(setup) as f:
                text = f.read()
            with open(setup, 'w') as f:
                f.write(text.replace('-std=c++17', '-std=c++20'))
        env = dict(os.environ, MMCV_WITH_OPS='1', MAX_JOBS=os.environ.get('MAX_JOBS', str(os.cpu_count() or 2)))
        subprocess.check_call([sys.executable, '-m', 'pip', 'wheel', '--no-build-isolation', '--no-deps',
                               '-w', dest, src], env=env)


def install_mmcv(stack, find_links):
    dist, ver = MMSTACK.pin(stack, 'mmcv')
    if mmcv_ok(stack):
        log(f'{dist} {ver} with ops already installed')
        return
    torch = torch_info()
    tag = f'cp{sys.version_info.major}{sys.version_info.minor}'
    for choice in mmcv_choices(stack, torch.base, torch.cuda, torch.gpu, tag, find_links):
        if choice.kind == 'build':
            break
        log(f'{dist} {ver}: taking {choice.reason}: {choice.source}')
        try:
            if choice.source.endswith('.whl'):
                pip('--no-deps', '--force-reinstall', choice.source)
            else:
                pip('--no-deps', '--only-binary', dist, '-f', choice.source, f'{dist}=={ver}')
        except subprocess.CalledProcessError:
            pass
        if mmcv_ok(stack):
            return
        log(f'{choice.source} did not install or load with torch {torch.full}; ignoring it')
    dest = choice.source
    build_mmcv(stack, dest, torch, choice.reason)
    pip('--no-deps', '--force-reinstall', *glob.glob(os.path.join(dest, wheel_pattern(stack, tag))))
    if not mmcv_ok(stack):
        sys.exit(f'{dist} was built but `import mmcv.ops` fails; see the build log above.')


# ------------------------------------------------------------------------------------------ tasks --------

def install_tasks(stack):
    """The task codebases, pip never swapping torch, mmcv or numpy (nor adding a second OpenCV)."""
    spec = MMSTACK.STACKS[stack]
    dist, ver = MMSTACK.pin(stack, 'mmcv')
    pins = [f'torch=={torch_info().full}', f'{dist}=={ver}']
    if version('numpy'):
        pins.append(f'numpy=={version("numpy")}')
    if stack == 'openmmlab':
        pins.append(spec.setuptools)
    with tempfile.NamedTemporaryFile('w', suffix='.txt', delete=False) as f:
        f.write('\n'.join(pins) + '\n')
    try:
        no_deps = [spec.pins.get(r, r) for r in spec.no_deps]
        if no_deps:
            pip('--no-deps', *no_deps)
        rest = [spec.pins[a.scope] for a in ADAPTERS.ADAPTERS if a.scope not in spec.no_deps]
        pip('-c', f.name, *rest, *spec.real_needs, *ADAPTERS.install_requirements())
    finally:
        os.unlink(f.name)


def check_one_opencv():
    builds = [d for d in ('opencv-python', 'opencv-python-headless', 'opencv-contrib-python',
                          'opencv-contrib-python-headless') if version(d)]
    if len(builds) > 1:
        log(f'WARNING: several OpenCV builds share the cv2 folder: {", ".join(builds)}')


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--stack', choices=sorted(MMSTACK.STACKS), default=MMSTACK.DEFAULT_STACK,
                        help=f'OpenMMLab upstream releases or the onedl fork (default {MMSTACK.DEFAULT_STACK})')
    parser.add_argument('--mmcv-find-links', default=os.environ.get('VMAMBA_MMCV_FIND_LINKS', ONEDL_INDEX),
                        help='where the fork\'s prebuilt mmcv wheels are: its index URL (default) or a folder '
                             'laid out as it (cu<XYZ>-torch<M><m>0/simple/onedl-mmcv/*.whl)')
    parser.add_argument('--no-mm', action='store_true', help='skip mmcv/mmdet/mmseg/mmpretrain')
    parser.add_argument('--no-numba', action='store_true', help='skip numba (CPU scans then use the torch backend)')
    parser.add_argument('--deploy', action='store_true', help='also install onnx, onnxruntime and onnxscript')
    args = parser.parse_args()
    stack = MMSTACK.STACKS[args.stack]

    pip(stack.setuptools, *BASE)
    install_torch()
    numpy_before = version('numpy')
    switch_stack(args.stack)
    pip('opencv-python-headless', stack.pins['mmengine'], 'safetensors', *([] if args.no_numba else CPU_JIT),
        *(DEPLOY if args.deploy else []))
    if not args.no_mm:
        install_mmcv(args.stack, args.mmcv_find_links)
        install_tasks(args.stack)
    pip('--no-deps', '--no-build-isolation', '-e', REPO)
    tasks = ''.join(f', {a.scope}' for a in ADAPTERS.ADAPTERS)
    check = ('import vmamba' + ('' if args.no_mm else ', mmcv.ops' + tasks) +
             ('' if args.no_numba else ', numba') + (', onnx, onnxruntime' if args.deploy else ''))
    if not python_ok(check):
        subprocess.call([sys.executable, '-c', check])
        sys.exit('install finished but the imports above fail')
    if numpy_before and version('numpy') != numpy_before:
        log(f'WARNING: numpy changed from {numpy_before} to {version("numpy")}')
    if args.stack == 'onedl':  # upstream mmengine 0.10.7 requires the GUI build beside the headless one
        check_one_opencv()
    log(f'done ({args.stack} stack): ' + ', '.join(
        f'{MMSTACK.installed(d)[0] if d in MMSTACK.DISTRIBUTIONS else d} {version(d)}'
        for d in ['torch', 'torchvision', 'triton', 'numpy', 'mmengine', 'numba', 'mmcv',
                  *(a.scope for a in ADAPTERS.ADAPTERS), 'onnx', 'onnxruntime'] if version(d)))


if __name__ == '__main__':
    main()
