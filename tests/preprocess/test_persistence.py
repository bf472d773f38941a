"""State dicts and .npz files: plain tensors plus parameters, no pickle."""

import json
import pickle

import numpy as np
import pytest
import torch

from gradwise.preprocess import (
    PCA,
    MeanSubtract,
    MinMaxScale,
    NotFittedError,
    PCAWhiten,
    Rescale,
    Standardize,
    ZCAWhiten,
    from_state_dict,
    load,
    make_pipeline,
    save,
)


def test_state_dict_is_name_params_and_tensors():
    scaler = MinMaxScale((-1, 1), per="channel").fit(torch.rand(10, 3, 2, 2))
    state = scaler.state_dict()
    assert state["name"] == "MinMaxScale"
    assert json.loads(json.dumps(state["params"])) == {"feature_range": [-1, 1], "per": "channel"}
    assert set(state["tensors"]) == {"sample_shape_", "data_min_", "data_max_", "scale_", "min_"}
    assert state["tensors"]["sample_shape_"].tolist() == [3, 2, 2]
    assert all(isinstance(value, torch.Tensor) for value in state["tensors"].values())


def test_the_file_is_read_without_pickle(tmp_path):
    pipeline = make_pipeline(Standardize(), PCA(np.int64(2))).fit(np.random.rand(20, 4))
    save(pipeline, tmp_path / "prep.bin")  # the path is used as given
    with np.load(tmp_path / "prep.bin", allow_pickle=False) as archive:
        assert all(archive[name].dtype != object for name in archive.files)
        assert "0.mean_" in archive.files
        assert "1.components_" in archive.files
    assert list(tmp_path.iterdir()) == [tmp_path / "prep.bin"]


def test_an_unfitted_transformer_round_trips_unfitted(tmp_path):
    save(ZCAWhiten(eps=0.5), tmp_path / "zca.npz")
    loaded = load(tmp_path / "zca.npz")
    assert loaded.get_params() == {"eps": 0.5}
    with pytest.raises(NotFittedError):
        loaded.transform(np.ones((2, 2)))


def test_loaded_transformers_answer_in_the_kind_they_are_given(tmp_path):
    train = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    scaler = Standardize().fit(torch.from_numpy(train))
    save(scaler, tmp_path / "scaler.npz")
    loaded = load(tmp_path / "scaler.npz")
    assert isinstance(loaded.transform(train), np.ndarray)
    assert isinstance(loaded.transform(torch.from_numpy(train)), torch.Tensor)
    np.testing.assert_array_equal(loaded.transform(train), scaler.transform(train))


def test_pickle_still_works_for_those_who_want_it():
    scaler = Standardize().fit(np.random.rand(10, 3))
    copy = pickle.loads(pickle.dumps(scaler))
    np.testing.assert_array_equal(
        copy.transform(np.ones((1, 3))), scaler.transform(np.ones((1, 3)))
    )


def test_files_that_are_not_ours_are_refused(tmp_path):
    np.savez(tmp_path / "other.npz", weights=np.ones(3))
    with pytest.raises(ValueError, match="is not a gradwise.preprocess file"):
        load(tmp_path / "other.npz")


def test_unknown_or_malformed_states_are_refused():
    with pytest.raises(ValueError, match="from_state_dict knows MeanSubtract, MinMaxScale"):
        from_state_dict({"name": "RobustScaler", "params": {}, "tensors": {}})
    with pytest.raises(ValueError, match="expects a mapping with keys 'name', 'params'"):
        from_state_dict({"name": "PCA"})
    bad = Standardize().fit(np.random.rand(5, 2)).state_dict()
    bad["tensors"]["__class__"] = torch.zeros(1)
    with pytest.raises(ValueError, match="learned tensors named like 'mean_'"):
        from_state_dict(bad)


def test_save_refuses_other_objects(tmp_path):
    with pytest.raises(TypeError, match="save expects a gradwise.preprocess transformer"):
        save({"mean": 1.0}, tmp_path / "x.npz")


# Rescale learns no tensor; it is here so that every transformer class is covered.
FITTED = [
    pytest.param(lambda: Rescale(0.5), id="Rescale"),
    pytest.param(MeanSubtract, id="MeanSubtract"),
    pytest.param(Standardize, id="Standardize"),
    pytest.param(lambda: MinMaxScale((-1, 1)), id="MinMaxScale"),
    pytest.param(lambda: PCA(2), id="PCA"),
    pytest.param(lambda: PCAWhiten(2, eps=0.0), id="PCAWhiten"),
    pytest.param(lambda: ZCAWhiten(eps=1e-3), id="ZCAWhiten"),
]


def learned(transformer):
    return {
        name: value.clone()
        for name, value in vars(transformer).items()
        if name.endswith("_") and isinstance(value, torch.Tensor)
    }


@pytest.mark.parametrize("make", FITTED)
def test_a_state_dict_shares_no_tensor_with_the_transformer(make):
    train = np.random.default_rng(0).normal(size=(40, 4)) * [1.0, 2.0, 3.0, 4.0]
    transformer = make().fit(train)
    before, probe = learned(transformer), np.random.default_rng(1).normal(size=(5, 4))
    expected = transformer.transform(probe)
    state = transformer.state_dict()
    saved = {name: value.clone() for name, value in state["tensors"].items()}
    # Editing the dict leaves the transformer alone ...
    for value in state["tensors"].values():
        value.add_(1)
    assert all(torch.equal(value, learned(transformer)[name]) for name, value in before.items())
    np.testing.assert_array_equal(transformer.transform(probe), expected)
    # ... and editing the transformer in place, or refitting it, leaves a dict taken
    # earlier alone.
    state = transformer.state_dict()
    for name in before:
        getattr(transformer, name).mul_(0)
    transformer.fit(np.random.default_rng(2).normal(size=(40, 4)))
    assert all(torch.equal(state["tensors"][name], value) for name, value in saved.items())


@pytest.mark.parametrize("make", FITTED)
def test_a_rebuilt_transformer_shares_no_tensor_with_its_state(make):
    train = np.random.default_rng(0).normal(size=(40, 4)) * [1.0, 2.0, 3.0, 4.0]
    original = make().fit(train)
    probe = np.random.default_rng(1).normal(size=(5, 4))
    expected = original.transform(probe)
    state = original.state_dict()
    rebuilt = from_state_dict(state)
    for value in state["tensors"].values():  # the state edited after loading
        value.add_(1)
    np.testing.assert_array_equal(rebuilt.transform(probe), expected)
    state = original.state_dict()
    saved = {name: value.clone() for name, value in state["tensors"].items()}
    rebuilt = from_state_dict(state)
    for name, value in vars(rebuilt).items():  # the rebuilt transformer edited in place
        if name.endswith("_") and isinstance(value, torch.Tensor):
            value.add_(1)
    assert all(torch.equal(state["tensors"][name], value) for name, value in saved.items())
