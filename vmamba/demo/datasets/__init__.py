"""The demo sets as datasets of the task codebases: one module per codebase, registered on import.

* :mod:`.detection` (mmdet): ``DemoCocoDataset``, the shapes of :mod:`vmamba.demo.coco` in COCO format;
* :mod:`.segmentation` (mmseg): ``DemoADE20KDataset``, the street scenes of :mod:`vmamba.demo.ade20k`;
* :mod:`.classification` (mmpretrain): ``DemoImageNet`` (:mod:`vmamba.demo.imagenet`) and
  ``DemoShapesImageNet`` (:mod:`vmamba.demo.shapes_cls`, the detection demo's pretraining).

Each dataset writes its set to ``data_root`` on first use, so a demo config runs from a fresh checkout;
``GENERATES_DATA = True`` tells the tools' missing-data check (:mod:`vmamba.tasks.data_checks`) so.
The modules are separate because each imports its codebase, and a config imports only its own
(``custom_imports``; :attr:`vmamba.tasks.adapters.TaskAdapter.demo_datasets` names it). This package
itself imports none of them.
"""
