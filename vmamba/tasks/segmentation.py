"""Former home of the segmentation demo dataset, kept so configs whose ``custom_imports`` name this module (the
configs dumped into older work dirs) still load: it registers what :mod:`vmamba.demo.datasets.segmentation` does.
"""
from vmamba.demo.datasets.segmentation import *  # noqa: F401,F403
