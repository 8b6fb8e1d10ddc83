"""The glue between the tools and the task codebases (mmdet, mmseg, mmpretrain).

* :mod:`.adapters`: what differs between the codebases, one row per task, and the one scope lookup;
* :mod:`.config_check`: loading a config and reporting its mistakes;
* :mod:`.config_transforms`: the command line folded into the config;
* :mod:`.data_checks`: missing data or pretrained weights, found before anything is built;
* :mod:`.distributed`: ``--launcher pytorch`` on a CPU machine;
* :mod:`.eval_options`: ``tools/test.py``'s ``--show``, ``--tta`` and ``--out``;
* :mod:`.runner`: building the Runner;
* :mod:`.classification`: mmpretrain hooks for official checkpoints and the EMA.

What keeps a run from losing work (checkpointing, resume, the NaN stop, strict loading) is in
:mod:`vmamba.engine`, the user errors in :mod:`vmamba.errors`.
"""
