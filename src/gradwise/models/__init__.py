"""Built-in models (MLP, 1-D CNN, small 2-D CNN) configured by depth, width, activation,
normalization and dropout."""

from gradwise.models._builders import ACTIVATIONS, MODELS, build_model, cnn1d, cnn2d, mlp
from gradwise.models._pooling import HalvingMaxPool

__all__ = ["ACTIVATIONS", "MODELS", "HalvingMaxPool", "build_model", "cnn1d", "cnn2d", "mlp"]
