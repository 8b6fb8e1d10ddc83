"""What makes a training or test run lose nothing, as mmengine hooks, loops and samplers.

One concern per module: :mod:`.checkpointing` (crash-safe checkpoint writes), :mod:`.resume` (which
checkpoint ``--resume`` continues from), :mod:`.exact_resume` (the data and random state of every step a
function of the seed and the step, so a resumed run continues exactly), :mod:`.nan_guard` (stop at a
non-finite loss) and :mod:`.strict_loading` (a checkpoint that does not fit is an error). They know no
task codebase: everything is registered in mmengine's root registries, so it builds under the mmdet,
mmseg and mmpretrain scopes alike, and the registered type names are the ones old work dirs hold.
"""
