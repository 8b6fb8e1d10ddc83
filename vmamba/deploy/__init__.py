"""Deployment: export VMamba models to ONNX with the selective scan lowered to standard ONNX operators.

- :mod:`.onnx_scan`: the scan ops as ONNX functions (two ``Scan`` loops, fixed node count, dynamic sizes).
- :mod:`.torch_export`: ``torch.export`` with dynamic batch / H / W (no onnx needed).
- :mod:`.weights`: :func:`~.weights.stress_weights`, weights for which a missing scan shows (no onnx needed).
- :mod:`.export`: the export of a classifier or backbone, and the verification against eager PyTorch.

onnx / onnxruntime are optional (``pip install -e .[deploy]``); nothing here imports them at package import.
"""
