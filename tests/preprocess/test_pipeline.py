"""Pipeline: fit on each step's output, chain, reverse, name, nest, save."""

import re

import numpy as np
import pytest
import torch

from gradwise.preprocess import (
    PCA,
    ConstantFeatureWarning,
    MeanSubtract,
    MinMaxScale,
    NotFittedError,
    PCAWhiten,
    Pipeline,
    Rescale,
    Standardize,
    ZCAWhiten,
    from_state_dict,
    load,
    make_pipeline,
    save,
)


def pixels(seed, n=60):
    rng = np.random.default_rng(seed)
    smooth = rng.normal(size=(n, 3, 1, 1)) * 40 + rng.normal(size=(n, 3, 3, 3)) * 20 + 120
    return np.clip(smooth, 0, 255).astype(np.uint8)


def image_pipeline():
    return Pipeline(
        [Rescale(1 / 255), ("normalize", Standardize(per="channel")), ZCAWhiten(eps=0.1)]
    )


def test_each_step_is_fitted_on_the_previous_steps_output():
    train = pixels(0)
    pipeline = image_pipeline().fit(train)
    rescaled = Rescale(1 / 255).fit_transform(train.astype(np.float64))
    normalize = Standardize(per="channel").fit(rescaled)
    zca = ZCAWhiten(eps=0.1).fit(normalize.transform(rescaled))
    steps = pipeline.named_steps
    for step, alone in [(steps["normalize"], normalize), (steps["zcawhiten"], zca)]:
        ours, reference = step.state_dict()["tensors"], alone.state_dict()["tensors"]
        assert ours.keys() == reference.keys()
        assert all(torch.equal(ours[key], reference[key]) for key in ours)


def test_transform_chains_the_steps_and_rounds_once():
    train, test = pixels(0), pixels(1)
    pipeline = image_pipeline().fit(train)
    by_hand = test.astype(np.float64)
    for step in pipeline.named_steps.values():
        by_hand = step.transform(by_hand)
    out = pipeline.transform(test)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, by_hand.astype(np.float32))
    np.testing.assert_array_equal(pipeline.fit_transform(train), pipeline.transform(train))


def test_transform_does_not_refit():
    train, test = pixels(0), pixels(1)
    pipeline = image_pipeline().fit(train)
    expected = image_pipeline().fit(train).transform(test)
    np.testing.assert_array_equal(pipeline.transform(test), expected)
    assert not np.allclose(expected, image_pipeline().fit(test).transform(test))


def test_inverse_transform_runs_the_steps_backwards():
    train, test = pixels(0).astype(np.float64), pixels(1).astype(np.float64)
    pipeline = image_pipeline().fit(train)
    np.testing.assert_allclose(
        pipeline.inverse_transform(pipeline.transform(test)), test, atol=1e-9
    )
    reduced = make_pipeline(MinMaxScale((-1, 1)), PCA(4)).fit(train.reshape(60, -1))
    assert reduced.inverse_transform(np.zeros((2, 4))).shape == (2, 27)


def test_inverse_transform_fails_at_a_step_without_inverse():
    pipeline = make_pipeline(MeanSubtract(per="sample"), Standardize()).fit(pixels(0))
    with pytest.raises(ValueError, match=r"MeanSubtract\(per='sample'\) has no inverse_transform"):
        pipeline.inverse_transform(np.zeros((2, 3, 3, 3)))


def test_a_failing_inverse_names_the_step_by_position_and_name_and_the_fix():
    # Two MeanSubtract steps: the class alone does not say which one cannot be undone.
    train = pixels(0).astype(np.float64)
    pipeline = Pipeline([MeanSubtract(per="sample"), MeanSubtract(), Standardize()]).fit(train)
    out = pipeline.transform(train)
    message = (
        "Pipeline.inverse_transform failed at steps[0] 'meansubtract-1', "
        "MeanSubtract(per='sample'): MeanSubtract(per='sample') has no inverse_transform: it "
        "does not keep each sample's mean. Use per='feature', 'channel' or 'global' to undo "
        "centering. To undo only the steps after steps[0], call "
        "Pipeline(pipeline.steps[1:]).inverse_transform(X)."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        pipeline.inverse_transform(out)
    # The prescribed call works: it undoes the two later steps.
    centered = MeanSubtract(per="sample").fit_transform(train)
    np.testing.assert_allclose(Pipeline(pipeline.steps[1:]).inverse_transform(out), centered)


def test_a_failing_inverse_in_a_nested_pipeline_names_the_path_to_the_step():
    inner = Pipeline([("per_image", MeanSubtract(per="sample")), Standardize()])
    pipeline = Pipeline([Rescale(0.5), ("inner", inner), Standardize()]).fit(pixels(0))
    with pytest.raises(
        ValueError,
        match=r"^Pipeline\.inverse_transform failed at steps\[1\] "
        r"'inner' > steps\[0\] 'per_image', MeanSubtract\(per='sample'\): ",
    ):
        pipeline.inverse_transform(pipeline.transform(pixels(1)))


def test_a_refused_input_and_an_unfitted_step_are_named_and_keep_their_type():
    pipeline = Pipeline([("reduce", PCA(4)), Standardize()]).fit(pixels(0).reshape(60, -1))
    message = (
        "Pipeline.inverse_transform failed at steps[1] 'standardize', Standardize(): X has 5 "
        "features, but this Standardize was fitted with 4 features. inverse_transform takes "
        "what this pipeline's transform returns."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        pipeline.inverse_transform(np.zeros((2, 5)))
    with pytest.raises(
        NotFittedError,
        match=r"^Pipeline\.inverse_transform failed at steps\[1\] 'standardize-2', "
        r"Standardize\(\): This Standardize instance is not fitted yet\.",
    ):
        Pipeline([Standardize(), Standardize()]).inverse_transform(np.zeros((2, 4)))


def test_a_failing_fit_or_transform_names_the_step_and_keeps_the_error_type():
    # Two steps of one class, the second failing: the class alone does not say which.
    train = pixels(0).reshape(60, -1).astype(np.float64)
    pipeline = Pipeline([PCA(4), PCA(10)])
    reason = (
        "The 'n_components' parameter of PCA must be an int <= 4 (the number of features) "
        "or a float in (0, 1). Got 10 instead."
    )
    for method in ("fit", "fit_transform"):
        message = f"Pipeline.{method} failed at steps[1] 'pca-2', PCA(n_components=10): {reason}"
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            getattr(pipeline, method)(train)
    # The second step fitted on 5 features, fed 4 by the first one.
    pipeline = Pipeline([PCA(4).fit(train), PCA(4).fit(train[:, :5])])
    message = (
        "Pipeline.transform failed at steps[1] 'pca-2', PCA(n_components=4): X has 4 "
        "features, but this PCA was fitted with 5 features."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        pipeline.transform(train)
    pipeline = Pipeline([Standardize().fit(train), Standardize()])
    with pytest.raises(
        NotFittedError,
        match=r"^Pipeline\.transform failed at steps\[1\] 'standardize-2', Standardize\(\): "
        r"This Standardize instance is not fitted yet\.",
    ):
        pipeline.transform(train)


def test_a_failing_fit_in_a_nested_pipeline_names_the_path_to_the_step():
    inner = Pipeline([("center", MeanSubtract()), ("reduce", PCA(30))])
    pipeline = Pipeline([Rescale(0.5), ("inner", inner)])
    with pytest.raises(
        ValueError,
        match=r"^Pipeline\.fit failed at steps\[1\] 'inner' > steps\[1\] 'reduce', "
        r"PCA\(n_components=30\): The 'n_components' parameter of PCA must be an int <= 27",
    ):
        pipeline.fit(pixels(0).reshape(60, -1))


def test_a_constant_feature_warning_names_the_step_that_issued_it():
    # Two Standardize steps; only the second scales, so only it warns.
    train = np.random.default_rng(0).normal(size=(50, 4))
    train[:, 2] = 7.0
    pipeline = Pipeline([Standardize(with_std=False), Standardize()])
    for method in ("fit", "fit_transform"):
        with pytest.warns(ConstantFeatureWarning) as caught:
            getattr(pipeline, method)(train)
        assert [str(warning.message) for warning in caught] == [
            f"Pipeline.{method} at steps[1] 'standardize-2', Standardize(): 1 feature is "
            "constant in the fit data (feature index 2); their scale is set to 1 (they are "
            "only centered). Drop them or check the data."
        ]
        assert caught[0].filename == __file__  # points at the call, as outside a pipeline
    # Outside a pipeline (and after one), the step names itself by its class.
    with pytest.warns(ConstantFeatureWarning, match=r"^Standardize: 1 feature is constant"):
        Standardize().fit(train)


def test_steps_are_named_after_their_class_unless_named():
    pipeline = Pipeline([Rescale(2.0), ("center", MeanSubtract()), Rescale(0.5), PCA()])
    assert list(pipeline.named_steps) == ["rescale-1", "center", "rescale-2", "pca"]
    assert repr(make_pipeline(Rescale(2.0))) == "Pipeline([('rescale', Rescale(factor=2.0))])"


def test_bad_steps_are_refused_in_the_one_format():
    expected = "a non-empty list of transformers or \\(name, transformer\\) pairs"
    for steps in ([], [Rescale(1.0), "scale"], [("a", Rescale(1.0), 1)], Rescale(1.0)):
        with pytest.raises(
            ValueError, match=f"^The 'steps' parameter of Pipeline must be {expected}"
        ):
            Pipeline(steps)
    with pytest.raises(ValueError, match="must name each step once. Got 'a' more than once"):
        Pipeline([("a", Rescale(1.0)), ("a", Rescale(2.0))])


def test_unfitted_steps_are_reported_by_name():
    with pytest.raises(NotFittedError, match="This Rescale instance is not fitted yet"):
        image_pipeline().transform(pixels(0))


def test_pipelines_nest_and_save_bit_for_bit(tmp_path):
    inner = make_pipeline(MeanSubtract(per="global"), Standardize(per="channel"))
    pipeline = Pipeline([Rescale(1 / 255), ("inner", inner), PCAWhiten(10)])
    train, test = pixels(0), torch.from_numpy(pixels(1))
    expected = pipeline.fit(train).transform(test)
    assert expected.dtype == torch.float32
    assert expected.shape == (60, 10)
    save(pipeline, tmp_path / "pipeline.npz")
    for copy in (load(tmp_path / "pipeline.npz"), from_state_dict(pipeline.state_dict())):
        assert isinstance(copy, Pipeline)
        assert list(copy.named_steps) == ["rescale", "inner", "pcawhiten"]
        assert torch.equal(copy.transform(test), expected)
        np.testing.assert_array_equal(copy.transform(test.numpy()), expected.numpy())
        np.testing.assert_allclose(
            copy.inverse_transform(expected), pipeline.inverse_transform(expected)
        )


def test_fit_on_a_tensor_returns_tensors_on_the_input_device():
    train = torch.from_numpy(pixels(0))
    out = image_pipeline().fit_transform(train)
    assert out.device == train.device
    assert out.dtype == torch.float32
    assert out.shape == train.shape
