"""The fused-op kernels compile for real GPUs (sm_80, sm_90) — checked ahead of time, without a GPU — and keep
their compile facts: no register spills, vectorised bulk loads, and the forward within its instruction budget.

The interpreter runs the kernels' maths on CPU but never compiles them; this runs Triton's full pipeline down to
a cubin for an explicit target, in a fresh process without TRITON_INTERPRET (see vmamba/analysis/compile_facts.py).
The tile length and the budgets come from the backend's plan and the tool (one source each); a missing spill count
(no ptxas) fails rather than passing unchecked.
"""
import json
import subprocess
import sys

import pytest
from repo_testlib import REPO, subprocess_env

triton = pytest.importorskip('triton')

from vmamba.analysis.compile_facts import BUDGET  # noqa: E402
from vmamba.ops.triton_backend.plan import GPU_TILE_ROWS  # noqa: E402



def _nvidia_backend_available():
    try:
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.backends.nvidia import compiler  # noqa: F401
    except ImportError:
        return False
    return True


def _compile_facts(arch, shape, tmp_path):
    env = {k: v for k, v in subprocess_env().items() if k != 'TRITON_INTERPRET'}  # compiled, not interpreted
    out = tmp_path / 'facts.json'
    proc = subprocess.run([sys.executable, '-m', 'vmamba.analysis.compile_facts', '--arch', str(arch),
                           '--shapes', shape, '--json', str(out)], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f'all kernels compiled for sm_{arch}' in proc.stdout
    return json.loads(out.read_text())


@pytest.mark.skipif(not _nvidia_backend_available(), reason='triton without the NVIDIA backend')
def test_stage1_compile_facts_sm90(tmp_path):
    records = _compile_facts(90, 's1l8_stage1', tmp_path)
    kernels = {r['kernel'] for r in records}
    assert kernels == {'fwd_summary[pair0]', 'fwd_summary[pair1]', 'carry', 'fwd_main[pair0]', 'fwd_main[pair1]',
                       'bwd_summary[pair0]', 'bwd_summary[pair1]', 'bwd_main[pair0]', 'bwd_main[pair1]',
                       'plain_fwd', 'plain_bwd'}
    bt = GPU_TILE_ROWS  # rows of every tile on the GPU
    for r in records:
        name = r['kernel']
        assert r['spill_bytes'] is not None and r['registers'] is not None, f'no ptxas figures: {r}'
        assert r['spill_bytes'] == 0, f'register spills: {r}'
        assert r['registers'] <= 255, r
        assert r['batch_offset_64bit'] is True, f'image offsets computed in 32 bits: {r}'
        if name == 'carry' or name.startswith('plain'):  # the plain op: compiles without spills, no budget
            continue
        # Each row of a tile is one vector load per thread: x and both routes' deltas (or dy and both deltas);
        # the backward main kernel loads dy (fp32) as vectors and its half-precision x/deltas as 4-byte words.
        assert r['vector_loads'] >= (bt if name.startswith('bwd_main') else 3 * bt), f'bulk loads not vectorised: {r}'
        assert r['instr_per_element'] is not None, r
        budget = BUDGET[(r['direction'], r['d_state'] > 1)]  # N = 1 here: 40 forward, 75 backward
        assert r['instr_per_element'] <= budget, f'over the {r["direction"]} budget: {r}'


@pytest.mark.skipif(not _nvidia_backend_available(), reason='triton without the NVIDIA backend')
def test_detection_shape_compiles_for_sm80(tmp_path):
    records = _compile_facts(80, 'det_b2', tmp_path)
    assert len(records) == 11
    # everything but the backward main kernels (92 / 24 spill bytes on sm_80, docs/benchmarks.md) is spill-free
    assert all(r['spill_bytes'] is not None for r in records), f'no ptxas spill counts: {records}'
    assert all(r['spill_bytes'] == 0 for r in records if not r['kernel'].startswith('bwd_main')), records


@pytest.mark.skipif(not _nvidia_backend_available(), reason='triton without the NVIDIA backend')
def test_blackwell_consumer_arch_reports_its_facts(tmp_path):
    """sm_120 (RTX 50) needs Triton's second ptxas and branches as BRA.U: every figure is there, none is None."""
    records = _compile_facts(120, 's1l8_stage1', tmp_path)
    assert len(records) == 11
    for r in records:
        assert r['registers'] is not None and r['spill_bytes'] is not None, r
        assert r['instr_per_element'] is not None or r['kernel'] == 'carry', r
        assert r['batch_offset_64bit'] is True, r


def test_batch_offset_check_tells_wide_from_narrow():
    from vmamba.analysis.compile_facts import batch_offset_64bit
    wide = '\tmov.u32 \t%r5, %ctaid.z;\n\tcvt.u64.u32 \t%rd1, %r5;\n\tmul.lo.s32 \t%r50, %r7, %r8;\n'
    narrow = '\tmov.u32 \t%r5, %ctaid.z;\n\tmul.lo.s32 \t%r6, %r5, %r7;\n\tcvt.u64.u32 \t%rd1, %r5;\n'
    assert batch_offset_64bit(wide, 'z') is True
    assert batch_offset_64bit(narrow, 'z') is False
    assert batch_offset_64bit(wide, 'y') is None


def test_loops_found_in_blackwell_branches():
    from vmamba.analysis.compile_facts import _loops
    sass = [(0x90, 'BRA.U !UP0, 0x4c0'), (0x6bc0, 'BRA.U UP0, 0x750'), (0x310, '@!P1 BRA 0x140'),
            (0x500, 'BRA 0x500')]
    assert sorted(_loops(sass)) == [(0x140, 0x310), (0x500, 0x500), (0x750, 0x6bc0)]
