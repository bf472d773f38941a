"""gradwise: train deep networks well, on PyTorch."""

__version__ = "0.1.0"
