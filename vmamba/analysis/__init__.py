"""Analysis helpers behind ``tools/analysis/``: FLOP counting in the official convention, building any
variant/baseline/config as a measurable :class:`~vmamba.analysis.subjects.Subject`, timing, receptive fields.

Read in this order: flops.py, subjects.py, timing.py, erf.py; reference.py holds the published numbers.
Unlike the core packages, this one may import mmdet/mmseg/mmpretrain (lazily, only for configs that need them).
"""
from .flops import Complexity, count_complexity, official_scan_counting
from .subjects import BASELINES, DEFAULT_SHAPES, SWIN_BASELINE, Batch, SpecError, Subject, build_subject

__all__ = ['Complexity', 'count_complexity', 'official_scan_counting', 'BASELINES', 'DEFAULT_SHAPES',
           'SWIN_BASELINE', 'Batch', 'SpecError', 'Subject', 'build_subject']
