"""One GPU, under 8 minutes: everything a reviewer of the scan kernels needs, on any machine where a CUDA torch
and triton run (no OpenMMLab, no network, no install step).

Steps, each in its own process with its own time limit (one slow step cannot take the others' time):

1. ``ops_tests``: the ops tests compiled on the GPU (``VMAMBA_TEST_GPU=1 pytest tests/ops``: fp32, fp16 and bf16
   inputs, every backend path);
2. ``bench_scan``: the scan op at batch 128 (ms, GB/s, % of the HBM peak; fused op against the unfused chain);
3. ``models``: VMamba-T and vanilla-T against Swin-T (inference and training img/s, peak memory, batch 128, bf16
   autocast; mmpretrain's Swin-T, else timm's ``swin_tiny_patch4_window7_224``, the same architecture).

It ends with one short table and leaves the full logs in ``$VMAMBA_GPU_CHECK_OUT`` (default ``./gpu_check_logs``).

``import vmamba.models`` needs mmengine; where it is missing, the wheels that
``bash tools/analysis/gpu_check_wheels.sh`` put into ``.whl/`` beforehand (on a machine with network) are unpacked
into a temporary folder put on the steps' ``PYTHONPATH``. ``--dry-run`` runs the same steps and table on CPU (the
Triton interpreter, tiny shapes), which the test suite does with the OpenMMLab task packages hidden
(``--hide``), so the bare-machine path cannot rot.

    python tools/analysis/gpu_check.py                      # on the GPU machine, from the repository root
    python tools/analysis/gpu_check.py --dry-run --hide mmcv mmdet mmseg mmpretrain
"""
import argparse
import json
import os
import os.path as osp
import re
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
OUT_VAR = 'VMAMBA_GPU_CHECK_OUT'
NEEDED = ('mmengine', 'addict', 'yapf', 'termcolor', 'rich', 'yaml', 'pytest')

#: The make-believe site customisation that makes the --hide packages unimportable in every step.
_HIDER = '''import importlib.abc, os, sys
_HIDE = set(os.environ.get('VMAMBA_GPU_CHECK_HIDE', '').split(','))
class _Hidden(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] in _HIDE:
            raise ModuleNotFoundError(f'No module named {name!r} (hidden by gpu_check --hide)', name=name)
sys.meta_path.insert(0, _Hidden())
'''


def steps(dry_run, out):
    """(name, time limit in s, argv, extra environment) of each step; the dry run: CPU, interpreter, tiny."""
    py = sys.executable
    if not dry_run:
        return [
            ('ops_tests', 200, [py, '-m', 'pytest', 'tests/ops', '-q', '-x', '-p', 'no:cacheprovider'],
             {'VMAMBA_TEST_GPU': '1'}),
            ('bench_scan', 120, [py, 'tools/analysis/bench_scan.py', '--batch', '128', '--dtypes', 'bf16',
                                 '--d-states', '1', '16', '--no-ref', '--json', osp.join(out, 'bench_scan.json')], {}),
            ('models', 150, [py, 'tools/analysis/benchmark.py', 'tiny', 'vanilla_tiny', '--compare', 'swin',
                             '--device', 'cuda', '--batch', '128', '--amp', 'bf16', '--inference-amp', 'bf16', '--out',
                             osp.join(out, 'models.json')], {}),
        ]
    # The kernels run interpreted in the first two steps; the whole models (interpreted, minutes) take the torch
    # scan: that step checks the bare-machine path (imports, baseline, table), the kernels are checked already.
    cpu = {'TRITON_INTERPRET': '1', 'CUDA_VISIBLE_DEVICES': ''}
    return [
        ('ops_tests', 150, [py, '-m', 'pytest', 'tests/ops/test_ops_ss2d.py', '-q', '-x', '-p', 'no:cacheprovider',
                            '-k', 'triton and (half_inputs or b2d3n1)'], cpu),
        ('bench_scan', 90, [py, 'tools/analysis/bench_scan.py', '--device', 'cpu', '--backend', 'triton', '--batch',
                            '1', '--image-size', '16', '--stages', '1', '--d-states', '1', '--dtypes', 'fp32',
                            '--no-ref', '--warmup', '0', '--repeats', '1', '--json',
                            osp.join(out, 'bench_scan.json')], cpu),
        ('models', 120, [py, 'tools/analysis/benchmark.py', 'tiny', '--compare', 'swin', '--device', 'cpu',
                         '--batch', '1', '--shape', '32', '--warmup', '0', '--iters', '1', '--threads', '1',
                         '--amp', 'bf16', '--inference-amp', 'bf16', '--out', osp.join(out, 'models.json')], dict(cpu, VMAMBA_SCAN_BACKEND='torch')),
    ]


def _wheel_fits(name):
    """Whether a wheel's tags suit this interpreter (pure Python, or this CPython on this machine's Linux)."""
    python, abi, platform = name[:-4].split('-')[-3:]
    here = f'cp{sys.version_info.major}{sys.version_info.minor}'
    if platform == 'any':
        return python.startswith('py3') or here in python.split('.')
    return here in python.split('.') and sysconfig.get_platform().split('-')[-1] in platform


def _requires_python_ok(path):
    """The wheel's ``Requires-Python`` lower bounds (``>=3.X``), checked against this interpreter."""
    with zipfile.ZipFile(path) as z:
        meta = next((n for n in z.namelist() if n.endswith('.dist-info/METADATA')), None)
        text = z.read(meta).decode('utf-8', 'replace') if meta else ''
    m = re.search(r'^Requires-Python:\s*(.+)$', text, re.M)
    for low in re.findall(r'>=\s*(\d+)\.(\d+)', m.group(1) if m else ''):
        if sys.version_info[:2] < tuple(map(int, low)):
            return False
    return True


def unpack_wheels(wheel_dir, target):
    """Unpack the newest fitting wheel of each package in ``wheel_dir`` into ``target`` (what ``pip install
    --no-deps --target`` does for these wheels, without pip or a network). Returns the wheel names used."""
    best = {}
    for name in sorted(os.listdir(wheel_dir)):
        path = osp.join(wheel_dir, name)
        if not name.endswith('.whl') or not _wheel_fits(name) or not _requires_python_ok(path):
            continue
        package, version = name.split('-')[:2]
        key = tuple(int(v) if v.isdigit() else 0 for v in version.split('.'))
        if package.lower() not in best or key > best[package.lower()][0]:
            best[package.lower()] = (key, path)
    for _, path in best.values():
        with zipfile.ZipFile(path) as z:
            z.extractall(target)
    return sorted(osp.basename(p) for _, p in best.values())


def _missing(env):
    code = ('import importlib.util, sys; print(",".join(m for m in sys.argv[1:] '
            'if importlib.util.find_spec(m) is None))')
    proc = subprocess.run([sys.executable, '-c', code, *NEEDED], env=env, capture_output=True, text=True, cwd=REPO)
    return [m for m in proc.stdout.strip().split(',') if m]


def prepare_env(args, scratch, log):
    """The steps' environment: this checkout first on PYTHONPATH, the hidden packages hidden, and the wheels
    unpacked where a needed package is missing."""
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    paths = [REPO]
    if args.hide:
        with open(osp.join(scratch, 'sitecustomize.py'), 'w') as f:
            f.write(_HIDER)
        paths.insert(0, scratch)
        env['VMAMBA_GPU_CHECK_HIDE'] = ','.join(args.hide)
        log(f'hidden from the steps: {", ".join(args.hide)}')
    env['PYTHONPATH'] = os.pathsep.join(paths + [p for p in [os.environ.get('PYTHONPATH')] if p])
    missing = _missing(env)
    if missing:
        if not osp.isdir(args.wheels):
            log(f'missing {", ".join(missing)} and no wheel folder {args.wheels} '
                '(run bash tools/analysis/gpu_check_wheels.sh on a machine with network)')
            return env
        target = osp.join(scratch, 'site')
        used = unpack_wheels(args.wheels, target)
        env['PYTHONPATH'] = os.pathsep.join([env['PYTHONPATH'], target])  # installed packages keep precedence
        log(f'missing {", ".join(missing)}: unpacked {len(used)} wheels from {args.wheels} into {target}')
        still = _missing(env)
        if still:
            log(f'still missing after the wheels: {", ".join(still)}')
    return env


def run_step(name, limit, argv, extra, env, out, log):
    """Run one step with its time limit, its output teed to ``out/<name>.txt``. Returns (exit status, seconds,
    output); status 124 on timeout."""
    log(f'=== {name} (limit {limit}s): {" ".join(osp.relpath(a, REPO) if a.startswith(REPO) else a for a in argv)}')
    start = time.time()
    lines = []
    with open(osp.join(out, f'{name}.txt'), 'w') as f:
        proc = subprocess.Popen(argv, cwd=REPO, env=dict(env, **extra), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            deadline = start + limit
            for line in proc.stdout:
                f.write(line)
                lines.append(line)
                if time.time() > deadline:
                    raise subprocess.TimeoutExpired(argv, limit)
            status = proc.wait(timeout=max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            status = 124
            f.write(f'\n[gpu_check: killed after {limit}s]\n')
    seconds = time.time() - start
    log(f'=== {name}: exit {status}, {seconds:.0f}s')
    return status, seconds, ''.join(lines)


def _load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def summary_rows(results, out):
    """(item, result) rows of the final table from the steps' outputs and JSON files."""
    rows = []
    status, seconds, text = results.get('ops_tests', (None, 0, ''))
    if status is not None:
        counts = re.findall(r'(\d+) (passed|failed|skipped|errors?)', text)
        rows.append(('ops tests', (', '.join(f'{n} {what}' for n, what in counts) or 'no result')
                     + f' (exit {status}, {seconds:.0f}s)'))
    bench = _load(osp.join(out, 'bench_scan.json'))
    if bench:
        for r in bench['rows']:
            if r['variant'] != 'fused':
                continue
            unfused = next((u for u in bench['rows'] if u['variant'] == 'unfused' and
                            (u['stage'], u['d_state'], u['dtype']) == (r['stage'], r['d_state'], r['dtype'])), None)
            pct = f', {r["fwd_pct_peak"]:.0f} % of peak' if r.get('fwd_pct_peak') is not None else ''
            vs = f'; unfused/fused {unfused["fwdbwd_ms"] / r["fwdbwd_ms"]:.2f}x fwd+bwd' if unfused else ''
            rows.append((f'scan stage {r["stage"]} N={r["d_state"]} {r["dtype"]} b{bench["batch"]}',
                         f'fwd {r["fwd_ms"]:.3f} ms {r["fwd_gbs"]:.3g} GB/s{pct}; fwd+bwd {r["fwdbwd_ms"]:.3f} ms'
                         + vs))
    elif 'bench_scan' in results:
        rows.append(('scan benchmark', f'no result (exit {results["bench_scan"][0]})'))
    models = _load(osp.join(out, 'models.json'))
    if models:
        by = {}
        for t in models:
            by.setdefault(t['model'], {})[t['mode']] = t
        for model, modes in by.items():
            if 'skipped' in modes:
                rows.append((model, modes['skipped']['reason']))
                continue
            cells = [f'{m} {t["images_per_s"]:.1f} img/s ({t["dtype"]}'
                     + (f', peak {t["peak_mem_mb"]:.0f} MB)' if t.get('peak_mem_mb') is not None else ')')
                     for m, t in modes.items()]
            rows.append((f'{model} b{next(iter(modes.values()))["batch"]}', '; '.join(cells)))
    elif 'models' in results:
        rows.append(('models', f'no result (exit {results["models"][0]})'))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dry-run', action='store_true', help='CPU, the Triton interpreter, tiny shapes')
    parser.add_argument('--wheels', default=osp.join(REPO, '.whl'), help='wheel folder (default: .whl)')
    parser.add_argument('--hide', nargs='+', default=[], metavar='PKG',
                        help='make these packages unimportable in the steps (e.g. mmcv mmdet mmseg mmpretrain)')
    parser.add_argument('--steps', nargs='+', choices=['ops_tests', 'bench_scan', 'models'])
    args = parser.parse_args(argv)
    out = osp.abspath(os.environ.get(OUT_VAR) or 'gpu_check_logs')
    os.makedirs(out, exist_ok=True)
    for stale in ('bench_scan.json', 'models.json'):
        if osp.exists(osp.join(out, stale)):
            os.remove(osp.join(out, stale))
    log_file = open(osp.join(out, 'gpu_check.txt'), 'w')

    def log(msg):
        print(msg, flush=True)
        log_file.write(msg + '\n')
        log_file.flush()

    with tempfile.TemporaryDirectory(prefix='vmamba_gpu_check_') as scratch:
        env = prepare_env(args, scratch, log)
        probe = subprocess.run([sys.executable, '-c', 'import torch, triton; print("torch", torch.__version__, '
                                '"triton", triton.__version__, "|", torch.cuda.get_device_name() '
                                'if torch.cuda.is_available() else "no CUDA device")'],
                               env=env, capture_output=True, text=True, cwd=REPO)
        log((probe.stdout or probe.stderr).strip().splitlines()[-1] if (probe.stdout or probe.stderr) else '?')
        results = {}
        for name, limit, cmd, extra in steps(args.dry_run, out):
            if args.steps and name not in args.steps:
                continue
            results[name] = run_step(name, limit, cmd, extra, env, out, log)
    rows = summary_rows(results, out)
    width = max([len(r[0]) for r in rows] + [4])
    log(f'\n{"dry run (CPU, Triton interpreter, tiny shapes)" if args.dry_run else "GPU check"}: logs in {out}')
    log(f'| {"item":<{width}} | result |')
    log(f'|{"-" * (width + 2)}|---|')
    for item, result in rows:
        log(f'| {item:<{width}} | {result} |')
    log_file.close()
    failed = [n for n, (s, _, _) in results.items() if s != 0]
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
