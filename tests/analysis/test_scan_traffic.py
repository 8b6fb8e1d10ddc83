"""The fused scan's memory model (vmamba/analysis/scan_traffic.py, what `bench_scan.py --traffic` prints) holds the
kernels' backward-memory target: for every VMamba-T stage at batch 128, vanilla stage 1 (d_state
16) and the Mask R-CNN image pair, the backward allocates beyond its outputs at most 25 % of the op's input
bytes. The figures come from the kernels' own launch plan and workspace list
(triton_backend.plan.bwd_workspaces), so a change that grows a workspace fails here."""
import pytest

from vmamba.analysis import scan_traffic
from vmamba.analysis.compile_facts import SHAPES


@pytest.mark.parametrize('name', sorted(SHAPES))
def test_backward_extra_memory_within_a_quarter_of_the_inputs(name):
    batch, H, W, D, N = SHAPES[name]
    extra = scan_traffic.backward_extra_memory(batch, H, W, D, N, 2)
    inputs = scan_traffic.input_bytes(batch, H, W, D, N, 2)
    assert 0 < extra <= 0.25 * inputs, f'{name}: {extra / inputs:.1%} of the inputs'

