"""Former home of the detection demo dataset, kept so configs whose ``custom_imports`` name this module (the
configs dumped into older work dirs) still load: it registers what :mod:`vmamba.demo.datasets.detection` does.
"""
from vmamba.demo.datasets.detection import *  # noqa: F401,F403
