"""Check the samples a config reads: every image and label map listed exists and reads, labels are classes,
label maps fit their images, boxes are inside their images with a known category (vmamba.tasks.data_quality).

    python tools/check_data.py CONFIG [--split train|val|test|all] [--full] [--cfg-options key=value ...]

Reads file headers only, and the label maps of a sample of the segmentation masks; ``--full`` reads every
label map. Prints one line per problem, with its file; exit status 1 if there is any.
"""
import argparse
import sys

import vmamba  # noqa: F401  (first: it quiets setuptools' pkg_resources notice before mmengine is imported)
from mmengine.config import DictAction

import vmamba.models  # noqa: F401
from vmamba import errors
from vmamba.tasks import config_check, data_checks, data_quality

SPLITS = dict(train=['train_dataloader'], val=['val_dataloader'], test=['test_dataloader'],
              all=['train_dataloader', 'val_dataloader', 'test_dataloader'])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Check the data a config reads, before training on it.')
    parser.add_argument('config', help='config file')
    parser.add_argument('--split', choices=sorted(SPLITS), default='all', help='which dataloaders (default: all)')
    parser.add_argument('--full', action='store_true',
                        help=f'read every segmentation label map (default: up to {data_quality.SAMPLED} per set)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config entries')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with errors.reported():
        cfg = config_check.load_config(args.config, args.cfg_options)
        loaders = [k for k in SPLITS[args.split] if cfg.get(k)]
        data_checks.check_data(cfg, args.config, loaders)
        reports = data_quality.check_datasets(cfg, loaders, full=args.full)
        for key, _, report in reports:
            for path, what in report.problems:
                print(f'{key}: {path}: {what}')
            print(f'{key}: {report.total} sample(s) checked, {len(report.problems)} problem(s)', file=sys.stderr)
        if any(r.problems for _, _, r in reports):
            sys.exit(1)


if __name__ == '__main__':
    main()
