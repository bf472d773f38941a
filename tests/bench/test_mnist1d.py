"""MNIST-1D baselines: capacity orders the test accuracies, the CNN clears 80% quickly."""

from __future__ import annotations

import pytest

from gradwise.bench import MNIST1D_MODELS, mnist1d_baselines


def test_capacity_orders_the_baselines_and_the_cnn_beats_80_percent() -> None:
    results = mnist1d_baselines(epochs=6, seed=0)
    logreg, mlp, cnn = (results.accuracy(name) for name in MNIST1D_MODELS)
    assert logreg < mlp < cnn
    assert cnn > 0.80
    assert logreg > 0.15  # well above chance (0.10): the pipeline learns at all
    text = results.to_table().render_text()
    assert "0.94" in text
    assert "CNN" in text


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"models": ["ResNet"]}, "models"), ({"epochs": 0}, "epochs"), ({"lr": -1.0}, "lr")],
)
def test_bad_arguments_raise_the_one_format(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=f"The '{name}' parameter of mnist1d_baselines must be"):
        mnist1d_baselines(**kwargs)  # type: ignore[arg-type]
