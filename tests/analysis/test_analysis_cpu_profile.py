"""The CPU profile breakdown and the detection-size memory tool, end to end on tiny cases."""
import json

import pytest
import torch

from analysis_testlib import tool
from vmamba.analysis.cpu_profile import LiveTensorPeak, format_breakdowns, profile_subject
from vmamba.analysis.subjects import VSSMSubject

TINY = dict(dims=16, depths=(1, 1, 1, 1))


def test_inference_breakdown_names_the_vmamba_parts():
    b = profile_subject(VSSMSubject(TINY), 'inference', batch=1, height=64, width=64, warmup=1, iters=2)
    for kind in ('stem', 'norms', 'in_proj', 'depthwise conv', 'x_proj', 'dt_proj', 'scan op', 'out_proj', 'MLP',
                 'downsampling', 'head'):
        assert b.rows.get(kind, (0, 0))[0] > 0, kind
    assert all(bw == 0 for _, bw in b.rows.values())  # no backward in inference
    assert b.profiled_ms > 0 and b.wall_ms > 0
    assert b.rows['scan op'][0] < b.profiled_ms
    assert '| scan op |' in format_breakdowns([b])


def test_training_breakdown_attributes_the_backward_to_forward_kinds():
    b = profile_subject(VSSMSubject(TINY), 'train', batch=2, height=32, width=32, warmup=1, iters=1)
    for kind in ('scan op', 'MLP', 'in_proj', 'dt_proj', 'downsampling'):
        assert b.rows[kind][1] > 0, kind
    assert b.rows['grad accumulation'][1] > 0


def test_profile_tool_writes_json(tmp_path):
    out = tmp_path / 'profile.json'
    tool('profile_cpu').main(['tiny', '--compare', 'none', '--shape', '32', '--iters', '1', '--warmup', '0',
                              '--threads', '1', '--json', str(out)])
    (row,) = json.loads(out.read_text())
    assert row['model'] == 'tiny' and row['threads'] == 1 and row['rows']['scan op']['forward'] > 0


def test_live_tensor_peak_sees_the_largest_model_tensor():
    model = torch.nn.Sequential(torch.nn.Linear(8, 512), torch.nn.GELU(), torch.nn.Linear(512, 8))
    x = torch.randn(100, 8)
    with torch.no_grad(), LiveTensorPeak(model) as live:
        model(x)
    big = 100 * 512 * 4
    assert big <= live.peak_bytes <= 3 * big
    assert live.at_peak[0][0] == big and live.at_peak[0][2] == (100, 512)
    assert live.at_peak[0][1].startswith(('0:', '1:'))


def test_det_memory_tool_reports_time_and_peak(capsys):
    result = tool('det_memory').main(['tiny', '--shape', '64', '96', '--threads', '1', '--repeats', '1', '--live'])
    assert result['peak_rss_mb'] > 0 and result['built_rss_mb'] > 0 and len(result['times']) == 1
    assert 'live tensors created by the model code' in capsys.readouterr().out


def test_det_memory_trains_the_detector(capsys):
    """--train-detector: loss + backward of the arch's Mask R-CNN 1x config, one line per step with a finite loss."""
    result = tool('det_memory').main(['tiny', '--shape', '128', '160', '--threads', '1', '--repeats', '2',
                                      '--train-detector'])
    assert len(result['times']) == 2 and result['peak_rss_mb'] > result['built_rss_mb'] > 0
    out = capsys.readouterr().out
    losses = [float(line.rsplit('loss', 1)[1]) for line in out.splitlines() if line.strip().startswith('step')]
    assert len(losses) == 2 and all(0 < v < 100 for v in losses)


def test_det_memory_rejects_an_arch_without_a_detector_config():
    with pytest.raises(SystemExit, match='no Mask R-CNN 1x config'):
        tool('det_memory').main(['nosuch', '--train-detector'])


def test_benchmark_interleaved_reports_every_model_and_the_ratio(tmp_path, capsys):
    out = tmp_path / 'bench.json'
    tool('benchmark').main(['tiny', '--device', 'cpu', '--shape', '64', '--batch', '1', '--warmup', '0',
                            '--iters', '2', '--interleave', '--modes', 'inference', '--out', str(out)])
    rows = json.loads(out.read_text())
    assert [(r['model'], r['mode'], r['peak_mem_mb']) for r in rows] == [('tiny', 'inference', None),
                                                                         ('swin_t', 'inference', None)]
    assert all(r['images_per_s'] > 0 for r in rows)
    assert 'inference img/s relative to swin_t: tiny' in capsys.readouterr().out
