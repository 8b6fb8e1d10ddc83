"""tools/install.py's choice of where mmcv comes from, with a faked torch and a local folder standing in for
the fork's wheel index (dummy wheel files; nothing is installed)."""
import os

import pytest

from repo_testlib import tool


@pytest.fixture(scope='module')
def install():
    return tool('install')


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv('VMAMBA_WHEEL_CACHE', str(tmp_path / 'cache'))
    return tmp_path / 'cache'


def touch(folder, name):
    os.makedirs(folder, exist_ok=True)
    (folder / name).write_bytes(b'')
    return str(folder / name)


def fork_index(root, cu, torch_dir, *wheels):
    """A folder laid out as the fork's index: cu<XYZ>-torch<M><m>0/simple/onedl-mmcv/<wheel>."""
    return [touch(root / f'cu{cu}-torch{torch_dir}' / 'simple' / 'onedl-mmcv', w) for w in wheels]


def test_fork_prebuilt_wheel_for_a_published_cuda_torch(install, cache, tmp_path):
    index = tmp_path / 'index'
    whl, = fork_index(index, '129', '280', 'onedl_mmcv-2.3.6-cp312-cp312-manylinux_2_28_x86_64.whl')
    fork_index(index, '128', '280', 'onedl_mmcv-2.3.6-cp312-cp312-manylinux_2_28_x86_64.whl')
    choice = install.select_mmcv('onedl', '2.8.0', '12.9', True, 'cp312', str(index))
    assert (choice.kind, choice.source) == ('prebuilt', whl)
    assert 'torch 2.8.0 + CUDA 12.9' in choice.reason


@pytest.mark.parametrize('torch_base, cuda, tag, why', [
    ('2.11.0', '12.9', 'cp312', 'has no onedl-mmcv 2.3.6 wheel'),   # torch release not published
    ('2.8.0', '12.6', 'cp312', 'has no onedl-mmcv 2.3.6 wheel'),    # CUDA not published for it
    ('2.8.0', '12.9', 'cp311', 'has no onedl-mmcv 2.3.6 wheel'),    # Python not published
    ('2.8.0', '', 'cp312', 'CPU build'),                           # CPU torch: the fork ships CUDA builds only
])
def test_fork_builds_when_nothing_matches(install, cache, tmp_path, torch_base, cuda, tag, why):
    index = tmp_path / 'index'
    fork_index(index, '129', '280', 'onedl_mmcv-2.3.6-cp312-cp312-manylinux_2_28_x86_64.whl',
               'onedl_mmcv-2.3.5-cp312-cp312-manylinux_2_28_x86_64.whl')
    choice = install.select_mmcv('onedl', torch_base, cuda, bool(cuda), tag, str(index))
    assert choice.kind == 'build' and why in choice.reason
    key = f'torch-{torch_base}' + (f'-cu{cuda.replace(".", "")}' if cuda else '')
    assert choice.source == str(cache / 'onedl' / key)


def test_cache_is_keyed_by_stack_and_found_by_file_name(install, cache, tmp_path):
    index = tmp_path / 'index'
    fork_index(index, '129', '280', 'onedl_mmcv-2.3.6-cp312-cp312-manylinux_2_28_x86_64.whl')
    # An upstream build in the same torch folder is not the fork's, and the reverse.
    touch(cache / 'openmmlab' / 'torch-2.8.0-cu129', 'mmcv-2.1.0-cp312-cp312-linux_x86_64.whl')
    ours = touch(cache / 'onedl' / 'torch-2.8.0-cu129', 'onedl_mmcv-2.3.6-cp312-cp312-linux_x86_64.whl')
    choice = install.select_mmcv('onedl', '2.8.0', '12.9', True, 'cp312', str(index))
    assert (choice.kind, choice.source) == ('cached', ours)
    upstream = install.select_mmcv('openmmlab', '2.8.0', '12.9', True, 'cp312', str(index))
    assert upstream.kind == 'cached' and upstream.source.endswith('mmcv-2.1.0-cp312-cp312-linux_x86_64.whl')
    # The CPU build of the same torch is another folder: nothing cached there, so upstream builds.
    cpu = install.select_mmcv('openmmlab', '2.8.0', '12.9', False, 'cp312', str(index))
    assert cpu.kind == 'build' and cpu.source == str(cache / 'openmmlab' / 'torch-2.8.0')


def test_upstream_never_takes_the_forks_wheel(install, cache, tmp_path):
    index = tmp_path / 'index'
    fork_index(index, '129', '280', 'onedl_mmcv-2.3.6-cp312-cp312-manylinux_2_28_x86_64.whl')
    choice = install.select_mmcv('openmmlab', '2.8.0', '12.9', True, 'cp312', str(index))
    assert choice.kind == 'build' and '--stack onedl' in choice.reason


def test_the_forks_index_url_by_default(install, cache):
    choice = install.select_mmcv('onedl', '2.10.0', '12.9', True, 'cp312')
    assert choice.kind == 'prebuilt'
    assert choice.source == f'{install.ONEDL_INDEX}/cu129-torch2100/simple/onedl-mmcv/index.html'
    # If the index has nothing for it, the next choice is the build, naming what is published.
    last = list(install.mmcv_choices('onedl', '2.10.0', '12.9', True, 'cp312'))[-1]
    assert last.kind == 'build' and '2.10+cu12.9' in last.reason


def test_shared_wheels_found_by_file_name(install, cache):
    """The project's ../shared/wheels/torch-<v>/ holds both stacks' CPU builds side by side."""
    shared = os.path.join(install.REPO, '..', 'shared', 'wheels', 'torch-2.14.1')
    if not os.path.isdir(shared):
        pytest.skip('no ../shared/wheels beside this checkout')
    for stack, prefix in (('openmmlab', 'mmcv-2.1.0-'), ('onedl', 'onedl_mmcv-2.3.6-')):
        choice = install.select_mmcv(stack, '2.14.1', '13.0', False, 'cp311')
        if choice.kind == 'cached':
            assert os.path.basename(choice.source).startswith(prefix)
