"""Export a VMamba classifier or backbone to ONNX, with the selective scan as standard ONNX ops, and verify it.

    python tools/deploy/export_onnx.py ARCH_OR_CONFIG [--kind {classifier,backbone}] [--shape H W] [--batch N]
        [--checkpoint PATH [--key KEY]] [--out F.onnx] [--exporter {dynamo,torchscript}] [--static]
        [--stress-weights] [--atol 1e-4] [--verify B H W ...] [--no-inline] [--opset 18]

ARCH_OR_CONFIG: a variant name (tiny, small, base, vanilla_tiny, tiny_s1l8, ...) or a custom arch as a Python dict
(``"{'dims': 32, 'depths': (1, 1, 2, 1)}"``, see vmamba/models/variants.py), exported as the ImageNet
classifier ``VSSM`` (``--kind backbone``: the OpenMMLab backbone ``VMamba``, four NCHW feature maps), or an
mmengine config file, whose ``model.backbone`` (``type='VMamba'``) is exported.

The file takes any batch and any H, W >= 33 (dynamo exporter; multiples of 32 with --exporter torchscript).
After the export the tool always runs the file with onnxruntime (CPU) against eager PyTorch on the same inputs
(``--batch`` at ``--shape`` and ``batch + 1`` at ``(H + 32, W + 64)``, or the ``--verify`` cases), prints max abs
and rel errors and img/s, and keeps the file only if every max abs error is <= ``--atol`` (times the output's
magnitude where that is above 1, as for backbone feature maps); otherwise it exits
with status 1 and writes nothing (``--keep-failed`` keeps the rejected file as ``OUT.rejected.onnx``).

Without a checkpoint the weights are freshly initialised, and then the scan hardly matters to the output (the D
skip dominates): ``--stress-weights`` sets weights for which it does (see docs/deployment.md).

    python tools/deploy/export_onnx.py tiny --stress-weights --out work_dirs/deploy/tiny.onnx
    python tools/deploy/export_onnx.py tiny --checkpoint checkpoints/vssm1_tiny_0230s_ckpt_epoch_264.pth
    python tools/deploy/export_onnx.py configs/detection/maskrcnn_vmamba_tiny_1x.py --shape 800 1216 \
        --checkpoint work_dirs/maskrcnn_vmamba_tiny_1x/epoch_12.pth
"""
import argparse
import os.path as osp
import re
import sys

import vmamba  # noqa: F401  (first: it quiets setuptools' pkg_resources notice before mmengine is imported)
from vmamba import errors


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Export a VMamba model to ONNX and verify it with onnxruntime.')
    parser.add_argument('target', metavar='ARCH_OR_CONFIG',
                        help='variant name (e.g. tiny, vanilla_small) or mmengine config file (its model.backbone)')
    parser.add_argument('--kind', choices=['classifier', 'backbone'], default='classifier',
                        help='for a variant name: the ImageNet classifier VSSM (default) or the backbone VMamba')
    parser.add_argument('--shape', type=int, nargs=2, default=[224, 224], metavar=('H', 'W'),
                        help='example input size (default 224 224)')
    parser.add_argument('--batch', type=int, default=1, help='batch of the first verification run (default 1)')
    parser.add_argument('--checkpoint', help='weights: official ImageNet .pth, state dict, mmengine checkpoint, '
                                             'or .safetensors')
    parser.add_argument('--key', help="checkpoint entry holding the weights (e.g. model_ema); default: model / "
                                      "state_dict / the file itself")
    parser.add_argument('--num-classes', type=int, default=1000, help='classifier head size (default 1000)')
    parser.add_argument('--out', help='output .onnx file (default: work_dirs/deploy/<name>.onnx)')
    parser.add_argument('--exporter', choices=['dynamo', 'torchscript'], default='dynamo',
                        help='dynamo (torch.export; default, any H, W >= 33) or torchscript (the legacy exporter: '
                             'faster, H and W multiples of 32)')
    parser.add_argument('--opset', type=int, default=18, help='ONNX opset (default 18; >= 15)')
    parser.add_argument('--static', action='store_true', help='fixed batch and size instead of dynamic axes')
    parser.add_argument('--no-inline', action='store_true',
                        help='keep each scan as a call of an ONNX model-local function (one node a call) instead '
                             'of expanding it into the graph')
    parser.add_argument('--stress-weights', action='store_true',
                        help='set SS2D weights for which the output depends on the scan (Ds=0, dt_projs_bias=0.5, '
                             'x_proj_weight x3), for checking the export without a checkpoint')
    parser.add_argument('--atol', type=float, default=1e-4,
                        help='largest max abs error against eager PyTorch for the file to be kept (default 1e-4), '
                             'for outputs of magnitude <= 1; larger outputs (backbone features): relative to '
                             'their magnitude')
    parser.add_argument('--verify', type=int, nargs=3, action='append', metavar=('B', 'H', 'W'),
                        help='a verification case (repeatable); default: --batch at --shape and batch+1 at '
                             '(H+32, W+64)')
    parser.add_argument('--runs', type=int, default=1, help='timed runs per verification case (default 1)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the fresh weights (default 0; the inputs are fixed)')
    parser.add_argument('--keep-failed', action='store_true',
                        help='keep a file that fails the verification, as OUT.rejected.onnx')
    from vmamba.models.checkpoint_file import add_trust_option
    add_trust_option(parser)
    return parser.parse_args(argv)


def default_out(target, kind):
    if osp.isfile(target) or target.endswith('.py'):
        name = f'{osp.splitext(osp.basename(target))[0]}_backbone'
    else:
        custom = target.lstrip().startswith('{')
        name = 'vmamba_custom' if custom else f'vmamba_{re.sub(r"[^A-Za-z0-9_.-]", "_", target)}'
        name = f'{name}_{kind}'
    return osp.join('work_dirs', 'deploy', f'{name}.onnx')


def main(argv=None):
    args = parse_args(argv)
    with errors.reported():
        from vmamba.deploy import export
        export.require_onnx()  # before the model is built: a missing package is said first
        for name, value in (('--batch', args.batch), ('--runs', args.runs)):
            if value < 1:
                raise export.ExportError(f'{name} must be at least 1, got {value}.')
        import torch
        torch.manual_seed(args.seed)  # fresh weights (and so the stress weights) are the same every run
        model, description = export.build_model(args.target, kind=args.kind, checkpoint=args.checkpoint,
                                                 key=args.key, num_classes=args.num_classes)
        if args.stress_weights:
            export.stress_weights(model)
        weights = (f'weights from {args.checkpoint}' if args.checkpoint else 'fresh weights') + \
            (' + stress weights' if args.stress_weights else '')
        print(f'{description}, {weights}')
        if not args.checkpoint and not args.stress_weights:
            print('note: fresh weights hide most scan errors (the D skip dominates the output); add '
                  '--stress-weights for a verification that tests the scan')
        out = args.out or default_out(args.target, args.kind)
        cases = [(b, (h, w)) for b, h, w in args.verify] if args.verify else None
        facts, checks = export.export_and_verify(
            model, out, shape=tuple(args.shape), batch=args.batch, cases=cases, atol=args.atol,
            keep_failed=args.keep_failed, runs=args.runs, dynamic=not args.static, exporter=args.exporter,
            opset=args.opset, inline=not args.no_inline)
        worst = max(c.max_abs for c in checks)
        print(f'wrote {out} (max abs err {worst:.2e}, within --atol {args.atol:g})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
