"""The fused SS2D core and the cross-scan/merge pair, against the float64 reference."""
import pytest
import torch

from scan_testlib import (BACKENDS, DEVICE, SS2D_GRAD_NAMES, assert_half_close, assert_outputs_close,
                         assert_rel_close, cast_inputs, output_grad, run, ss2d_inputs, ss2d_reference)
from scan_testlib import SS2D_CASES as CASES
from vmamba.ops import (cross_merge, cross_merge_ref, cross_scan, cross_scan_ref, route_ref, ss2d_scan_ref,
                        ss2d_selective_scan)
from vmamba.ops.routes import route_index, route_maps, unroute_maps


def _fused(backend):
    return lambda *a: ss2d_selective_scan(*a, backend=backend)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('case', CASES, ids=lambda c: 'b{}d{}n{}_{}x{}'.format(*c))
def test_fp32_matches_reference(backend, case):
    y_ref, grads_ref = ss2d_reference(case)
    y, grads = run(_fused(backend), cast_inputs(ss2d_inputs(*case), torch.float32), output_grad(y_ref.shape))
    assert y.dtype == torch.float32
    assert_outputs_close(y, grads, y_ref, grads_ref, SS2D_GRAD_NAMES)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_inputs(backend, dtype):
    inputs = cast_inputs(ss2d_inputs(2, 4, 4, 5, 7), dtype)
    exact = [t.detach().to('cpu', torch.float64).requires_grad_() for t in inputs]
    dy = output_grad((2, 5, 7, 4))
    y_ref, grads_ref = run(ss2d_scan_ref, exact, dy)
    y, grads = run(_fused(backend), inputs, dy)
    assert y.dtype == torch.float32
    assert_half_close(y, y_ref, dtype, 'y')
    for name, t, g, g_ref in zip(SS2D_GRAD_NAMES, inputs, grads, grads_ref):
        assert g.dtype == t.dtype, name
        assert_half_close(g, g_ref, dtype, name)


@pytest.mark.parametrize('backend', BACKENDS)
def test_backward_is_deterministic(backend):
    inputs = cast_inputs(ss2d_inputs(2, 8, 4, 9, 14), torch.float32)
    dy = output_grad((2, 9, 14, 8))
    _, first = run(_fused(backend), inputs, dy)
    _, second = run(_fused(backend), inputs, dy)
    for name, a, b in zip(SS2D_GRAD_NAMES, first, second):
        assert torch.equal(a, b), name


def test_fused_equals_unfused_chain():
    """The fused op is exactly cross-scan -> plain scan -> cross-merge (route k uses channels k*D..k*D+D-1), in
    the channel-first layout of the official pipeline."""
    from vmamba.ops import selective_scan
    x, delta, A, B, C, D, bias = cast_inputs(ss2d_inputs(2, 3, 2, 4, 6), torch.float64, 'cpu')
    first = lambda t: t.permute(0, 3, 4, 1, 2)  # noqa: E731  (b, H, W, 4, C) -> (b, 4, C, H, W)
    ys = selective_scan(cross_scan(x.permute(0, 3, 1, 2)).flatten(1, 2), route_maps(first(delta)).flatten(1, 2), A,
                        route_maps(first(B)), route_maps(first(C)), D, bias, delta_softplus=True, backend='torch')
    chain = cross_merge(ys.unflatten(1, (4, -1)), 4, 6).permute(0, 2, 3, 1)
    fused = ss2d_selective_scan(x, delta, A, B, C, D, bias, backend='torch')
    torch.testing.assert_close(fused, chain, rtol=1e-12, atol=1e-12)


def test_gradcheck_float64_torch_path():
    inputs = cast_inputs(ss2d_inputs(1, 2, 2, 3, 4), torch.float64, 'cpu')
    assert torch.autograd.gradcheck(_fused('torch'), inputs)


@pytest.mark.parametrize('H,W', [(1, 1), (3, 5), (4, 4), (6, 3)])
def test_cross_scan_routes_and_adjoint(H, W):
    x = torch.randn(2, 3, H, W, dtype=torch.float64)
    xs = cross_scan(x)
    assert xs.shape == (2, 4, 3, H * W)
    torch.testing.assert_close(xs, cross_scan_ref(x))
    for k in range(4):
        # Route k reads spatial index route_index(k)[l] at sequence position l.
        torch.testing.assert_close(xs[:, k], x.flatten(2)[..., route_index(k, H, W)])
        torch.testing.assert_close(xs[:, k], route_ref(x, k))
    ys = torch.randn(2, 4, 3, H * W, dtype=torch.float64)
    merged = cross_merge(ys, H, W)
    torch.testing.assert_close(merged, cross_merge_ref(ys, H, W))
    # Adjoint: <cross_scan(x), ys> == <x, cross_merge(ys)>; likewise for the per-route maps.
    torch.testing.assert_close((xs * ys).sum(), (x * merged).sum())
    maps = torch.randn(2, 4, 3, H, W, dtype=torch.float64)
    torch.testing.assert_close((route_maps(maps) * ys).sum(), (maps * unroute_maps(ys, H, W)).sum())
    torch.testing.assert_close(unroute_maps(route_maps(maps), H, W), maps)


def test_cross_scan_merge_gradients_are_each_other():
    x = torch.randn(1, 2, 3, 5, dtype=torch.float64, requires_grad=True)
    ys = torch.randn(1, 4, 2, 15, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(cross_scan, (x,))
    assert torch.autograd.gradcheck(lambda t: cross_merge(t, 3, 5), (ys,))



@pytest.mark.parametrize('backend', BACKENDS)
def test_strided_operands_as_the_model_passes_them(backend):
    """The layouts SS2D hands over without copies: x a channels-last view of a conv output, B/C slices of one
    x_proj output (stride R + 2N per route), delta laid out route by route ((4, b, H, W, D) in memory)."""
    batch, dim, N, H, W, R = 2, 8, 2, 5, 7, 3
    x, delta, A, B, C, D, bias = ss2d_inputs(batch, dim, N, H, W)
    packed = torch.randn(batch, H, W, 4, R + 2 * N, dtype=torch.float64)
    packed[..., R:R + N], packed[..., R + N:] = B, C
    Bv, Cv = packed[..., R:R + N], packed[..., R + N:]
    delta_routes = delta.permute(3, 0, 1, 2, 4).contiguous().permute(1, 2, 3, 0, 4)
    x_cl = x.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
    assert not Bv.is_contiguous() and not delta_routes.is_contiguous()
    ref = ss2d_scan_ref(x, delta, A, B, C, D, bias)
    dev = lambda t: t.to(device=DEVICE, dtype=torch.float32)  # noqa: E731
    y = ss2d_selective_scan(dev(x_cl), dev(delta_routes), dev(A), dev(Bv), dev(Cv), dev(D), dev(bias),
                            backend=backend)
    assert_rel_close(y, ref, 1e-5, 'y')


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('dy_layout', ['transposed', 'batch_broadcast'])
def test_channel_sliced_x_and_strided_output_grads(backend, dy_layout):
    """x a channel slice of a wider map (position stride 2D) and an upstream gradient that is a transposed view
    or broadcast over the batch (batch stride 0): copied where the kernels cannot index them, never misread."""
    batch, dim, N, H, W = 2, 6, 1, 5, 7
    raw = ss2d_inputs(batch, dim, N, H, W)
    if dy_layout == 'transposed':
        dy = output_grad((batch, W, H, dim)).transpose(1, 2)
    else:
        dy = output_grad((H, W, dim)).expand(batch, H, W, dim)
    y_ref, grads_ref = run(ss2d_scan_ref, cast_inputs(raw, torch.float64, 'cpu'), dy)
    x_wide = torch.cat([raw[0], torch.randn_like(raw[0])], -1).to(DEVICE, torch.float32).requires_grad_()
    rest = cast_inputs(raw, torch.float32)[1:]
    x = x_wide[..., :dim]
    assert x.stride(2) == 2 * dim
    y = ss2d_selective_scan(x, *rest, backend=backend)
    dy32 = dy.to(device=y.device, dtype=torch.float32) if dy_layout == 'transposed' else \
        output_grad((H, W, dim)).to(device=y.device, dtype=torch.float32).expand(batch, H, W, dim)
    assert not dy32.is_contiguous()
    grads = torch.autograd.grad(y, [x_wide] + rest, dy32)
    assert (grads[0][..., dim:] == 0).all()
    assert_outputs_close(y, [grads[0][..., :dim]] + list(grads[1:]), y_ref, grads_ref, SS2D_GRAD_NAMES)


@pytest.mark.parametrize('case', [(1, 3, 1, 11, 13), (1, 2, 2, 3, 40), (1, 3, 1, 16, 5)],
                         ids=['11x13', '3x40', '16x5'])
def test_triton_gpu_chunk_length(monkeypatch, case):
    """The chunk length the GPU uses (8 positions; the interpreter defaults to longer ones): chunks that wrap
    between columns, several chunks per column, columns shorter than a chunk, and columns a whole number of
    chunks long (the column pair's positions then affine in the row, no wrap code compiled)."""
    from vmamba.ops.triton_backend import plan as launch_plan
    monkeypatch.setattr(launch_plan, 'TILE_ROWS', launch_plan.GPU_TILE_ROWS)
    y_ref, grads_ref = ss2d_reference(case)
    y, grads = run(_fused('triton'), cast_inputs(ss2d_inputs(*case), torch.float32), output_grad(y_ref.shape))
    assert_outputs_close(y, grads, y_ref, grads_ref, SS2D_GRAD_NAMES)


@pytest.mark.parametrize('fwd_cpp,bwd_want,d_state', [(1, 1, 1), (3, 5, 2), (2, 10 ** 6, 1)],
                         ids=['one_chunk_per_segment', 'bwd_segment_of_two', 'bwd_one_segment'])
def test_triton_segment_geometry(monkeypatch, fwd_cpp, bwd_want, d_state):
    """The GPU launch geometry: each sequence cut into segments of a few chunks (the interpreter runs one
    segment per sequence), with a segment carry between them, a short last segment, backward segments made of
    whole forward segments (3 chunks forward, 6 backward) or one backward segment over several forward ones;
    the per-program partial sums of dA, dD and d(delta_bias) are combined across the programs. N = 1 carries
    its states in registers, N = 2 in scratch memory."""
    from vmamba.ops.triton_backend import plan as launch_plan
    monkeypatch.setattr(launch_plan, '_chunks_per_program', lambda n_chunks, *args, **kwargs: fwd_cpp)
    monkeypatch.setattr(launch_plan, 'bwd_chunks_per_program', lambda n_chunks, *args: min(bwd_want, n_chunks))
    monkeypatch.setattr(launch_plan, 'TILE_ROWS', launch_plan.GPU_TILE_ROWS)
    case = (2, 3, d_state, 5, 13)  # L = 65: 9 chunks, the last one partial
    x = torch.zeros(case[0], case[3], case[4], case[1])
    A = torch.zeros(4 * case[1], case[2])
    plan = launch_plan.LaunchPlan(x, A)
    assert plan.n_chunks == 9 and plan.n_segs == -(-9 // fwd_cpp) > 1
    assert plan.bwd_cpp % fwd_cpp == 0 or plan.n_bsegs == 1
    y_ref, grads_ref = ss2d_reference(case)
    y, grads = run(_fused('triton'), cast_inputs(ss2d_inputs(*case), torch.float32), output_grad(y_ref.shape))
    assert_outputs_close(y, grads, y_ref, grads_ref, SS2D_GRAD_NAMES)


@pytest.mark.parametrize('K,bwd_want', [(4, 5), (4, 10 ** 6)], ids=['K4_two_segments', 'K4_one_segment'])
def test_triton_superchunk_adjoint_entries(monkeypatch, K, bwd_want):
    """N > 1: the backward stores the forward routes' adjoint entries once per superchunk of K chunks and its
    main kernel recomputes the K entries in between. L = 65 (9 chunks of 8) in backward segments of 6 and 3
    chunks (superchunks 4 + 2 and 3, the segment carry applied to recomputed entries) or one segment of 9
    (4 + 4 + 1); 130 channels (several channel blocks)."""
    from vmamba.ops.triton_backend import plan as launch_plan
    monkeypatch.setattr(launch_plan, '_chunks_per_program', lambda n_chunks, *args, **kwargs: 3)
    monkeypatch.setattr(launch_plan, 'bwd_chunks_per_program', lambda n_chunks, *args: min(bwd_want, n_chunks))
    monkeypatch.setattr(launch_plan, 'TILE_ROWS', launch_plan.GPU_TILE_ROWS)
    monkeypatch.setattr(launch_plan, 'SUPERCHUNK', K)
    case = (2, 130, 3, 5, 13)
    inputs = cast_inputs(ss2d_inputs(*case), torch.float32)
    plan = launch_plan.LaunchPlan(inputs[0].detach(), inputs[2].detach())
    assert plan.K == K and plan.n_chunks == 9 and plan.bwd_blocks > 1
    assert plan.n_bsegs == (1 if bwd_want > 9 else 2) and plan.n_qrows == 3  # 4 + 4 + 1, or 4 + 2 and 3
    assert launch_plan.bwd_workspaces(plan, torch.float32)['entry_scratch'][0] == (2, plan.n_bsegs, K, 130, 3)
    y_ref, grads_ref = ss2d_reference(case)
    y, grads = run(_fused('triton'), inputs, output_grad(y_ref.shape))
    assert_outputs_close(y, grads, y_ref, grads_ref, SS2D_GRAD_NAMES)


def test_triton_superchunk_plan(monkeypatch):
    """K = 1 (every chunk's entry stored) for N = 1; for vanilla stage 1 at batch 128 on 132 SMs, superchunks and
    one backward channel block of 256 (no fp32 dB/dC sums over blocks)."""
    from vmamba.ops.triton_backend import plan as launch_plan
    monkeypatch.setattr(launch_plan, 'TILE_ROWS', launch_plan.GPU_TILE_ROWS)
    _, _, p1 = launch_plan.meta_plan(128, 56, 56, 96, 1, torch.bfloat16, 132)
    assert p1.K == 1 and p1.n_qrows == p1.n_chunks
    assert 'entry_scratch' not in launch_plan.bwd_workspaces(p1, torch.bfloat16)
    _, _, p16 = launch_plan.meta_plan(128, 56, 56, 192, 16, torch.bfloat16, 132)
    assert p16.K > 1 and p16.n_qrows < p16.n_chunks // 8
    assert (p16.bwd_BD, p16.bwd_blocks) == (256, 1) and 'dB_sum' not in launch_plan.bwd_workspaces(p16, torch.bfloat16)


def test_triton_segments_with_half_inputs_and_several_channel_blocks(monkeypatch):
    """Segments (forward and backward) with bf16 inputs and 130 channels, three backward channel blocks of 64 (the
    last one partial): dB/dC are summed over the blocks in fp32 and cast once, every gradient comes back in its
    input's dtype."""
    from vmamba.ops.triton_backend import plan as launch_plan
    monkeypatch.setattr(launch_plan, '_chunks_per_program', lambda n_chunks, *args, **kwargs: 2)
    monkeypatch.setattr(launch_plan, 'bwd_chunks_per_program', lambda n_chunks, *args: min(3, n_chunks))
    monkeypatch.setattr(launch_plan, 'TILE_ROWS', launch_plan.GPU_TILE_ROWS)
    dtype = torch.bfloat16
    inputs = cast_inputs(ss2d_inputs(2, 130, 1, 5, 7), dtype)
    plan = launch_plan.LaunchPlan(inputs[0].detach(), inputs[2].detach())
    assert plan.n_segs == 3 and plan.n_bsegs == 2 and plan.bwd_blocks == 3
    assert 'dB_sum' in launch_plan.bwd_workspaces(plan, dtype)
    exact = [t.detach().to('cpu', torch.float64).requires_grad_() for t in inputs]
    dy = output_grad((2, 5, 7, 130))
    y_ref, grads_ref = run(ss2d_scan_ref, exact, dy)
    y, grads = run(_fused('triton'), inputs, dy)
    assert_half_close(y, y_ref, dtype, 'y')
    for name, t, g, g_ref in zip(SS2D_GRAD_NAMES, inputs, grads, grads_ref):
        assert g.dtype == t.dtype, name
        assert_half_close(g, g_ref, dtype, name)
