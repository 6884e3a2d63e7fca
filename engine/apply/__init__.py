"""Using what was trained: ``infer`` (images through a network), ``export`` (ONNX,
safetensors with metadata, ``.pth`` in canonical layouts) and ``interpolate`` (blends
of weight files). ``cli.py`` is a thin front over these modules.
"""
