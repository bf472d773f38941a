"""Masks, which parameters are prunable, and magnitude pruning against independent oracles."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gradwise.prune import (
    Masks,
    Pruning,
    RoundResult,
    Ticket,
    attach_masks,
    magnitude_masks,
    prunable_parameters,
)


def _model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(24, 30), nn.ReLU(), nn.Linear(30, 5)
    )


def _oracle_global(weights: dict[str, np.ndarray], keep: dict[str, np.ndarray], amount: float):
    """Sort the kept magnitudes of all tensors together; prune the round(amount * n) smallest."""
    pool = np.concatenate([np.abs(weights[name])[keep[name]] for name in weights])
    k = round(amount * pool.size)
    threshold = np.sort(pool)[k - 1] if k > 0 else -np.inf
    return {name: keep[name] & (np.abs(weights[name]) > threshold) for name in weights}


def _oracle_layer(weights: dict[str, np.ndarray], keep: dict[str, np.ndarray], amount: float):
    return {
        name: _oracle_global({name: weights[name]}, {name: keep[name]}, amount)[name]
        for name in weights
    }


def _numpy(model: nn.Module, names: list[str]) -> dict[str, np.ndarray]:
    parameters = dict(model.named_parameters())
    return {name: parameters[name].detach().double().numpy() for name in names}


def test_prunable_parameters_are_linear_and_conv_weights_without_the_output_layer() -> None:
    model = _model()
    assert list(prunable_parameters(model)) == ["0.weight", "3.weight"]
    assert list(prunable_parameters(model, include_output=True)) == [
        "0.weight", "3.weight", "5.weight",
    ]  # fmt: skip
    assert list(prunable_parameters(model, include_biases=True)) == [
        "0.weight", "0.bias", "3.weight", "3.bias",
    ]  # fmt: skip
    assert list(prunable_parameters(model, names=["*.bias"])) == ["0.bias", "3.bias", "5.bias"]
    assert prunable_parameters(model)["3.weight"] is model[3].weight


def test_a_tied_weight_is_prunable_once_under_its_parameter_name() -> None:
    # Before: "1.weight" too, a name named_parameters() does not have (attach_masks
    # refused the masks), and the shared tensor was ranked twice in a global pruning.
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    model[1].weight = model[0].weight
    assert list(prunable_parameters(model)) == ["0.weight"]
    masks = magnitude_masks(model, 0.5)
    assert list(masks) == ["0.weight"]
    attach_masks(model, torch.optim.SGD(model.parameters(), lr=0.1), masks)
    assert int((model[1].weight == 0).sum()) == 8


def test_prunable_parameters_refuses_a_glob_that_matches_nothing() -> None:
    with pytest.raises(ValueError, match=re.escape("Got 'fc.*', which matches none")):
        prunable_parameters(_model(), names=["fc.*"])
    with pytest.raises(ValueError, match="leave include_biases and include_output False"):
        prunable_parameters(_model(), names=["3.weight"], include_output=True)


@pytest.mark.parametrize("amount", [0.0, 0.1, 0.5, 0.93, 1.0])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_magnitude_masks_match_a_sort_based_oracle(amount: float, scope: str) -> None:
    model = _model()
    names = ["0.weight", "3.weight", "5.weight"]
    masks = magnitude_masks(model, amount, scope=scope, include_output=True)
    weights = _numpy(model, names)
    keep = {name: np.ones(weights[name].shape, dtype=bool) for name in names}
    oracle = (_oracle_global if scope == "global" else _oracle_layer)(weights, keep, amount)
    assert list(masks) == names
    for name in names:
        np.testing.assert_array_equal(masks[name].numpy(), oracle[name], err_msg=name)


def test_global_and_layer_scopes_differ_where_layers_have_different_scales() -> None:
    model = _model()
    with torch.no_grad():
        model[0].weight.mul_(100.0)  # the large-scale layer keeps everything globally
    global_masks = magnitude_masks(model, 0.5)
    layer_masks = magnitude_masks(model, 0.5, scope="layer")
    assert bool(global_masks["0.weight"].all())
    assert int(global_masks["3.weight"].sum()) == 720 - round(0.5 * (12 + 720))
    for name in layer_masks:
        assert int(layer_masks[name].sum()) == round(0.5 * layer_masks[name].numel())


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_pruning_p_of_the_remaining_weights_n_times_leaves_one_minus_p_to_the_n(
    scope: str,
) -> None:
    model = _model()
    rate, masks = 0.2, None
    names = ["0.weight", "3.weight"]
    keep = {
        name: np.ones(tuple(dict(model.named_parameters())[name].shape), bool) for name in names
    }
    for round_ in range(1, 8):
        with torch.no_grad():  # the weights move between rounds, as after retraining
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        masks = magnitude_masks(model, rate, scope=scope, masks=masks)
        oracle = (_oracle_global if scope == "global" else _oracle_layer)(
            _numpy(model, names), keep, rate
        )
        for name in names:
            np.testing.assert_array_equal(masks[name].numpy(), oracle[name])
        keep = oracle
        total = sum(masks[name].numel() for name in names)
        # rounding each round to whole weights: within one weight per tensor per round
        assert abs(masks.num_remaining() - (1 - rate) ** round_ * total) <= 2 * round_
        assert masks.fraction_remaining() == pytest.approx((1 - rate) ** round_, abs=0.01)


def test_magnitude_masks_only_rank_weights_that_are_still_kept() -> None:
    model = nn.Sequential(nn.Linear(4, 1), nn.Linear(1, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.1, 0.2, 3.0, 4.0]]))
    first = {"0.weight": torch.tensor([[True, True, False, True]])}  # 3.0 already pruned
    masks = magnitude_masks(model, 0.34, masks=first)  # round(0.34 * 3) = 1 more: the 0.1
    assert masks["0.weight"].tolist() == [[False, True, False, True]]


def test_masks_carry_tensors_not_chosen_this_round() -> None:
    model = _model()
    output_only = magnitude_masks(model, 0.5, names=["5.weight"])
    both = magnitude_masks(model, 0.5, masks=output_only)
    assert torch.equal(both["5.weight"], output_only["5.weight"])
    assert list(both) == ["5.weight", "0.weight", "3.weight"]


def test_masks_report_sparsity_per_tensor_and_in_total(tmp_path: Path) -> None:
    masks = Masks({
        "a": torch.tensor([True, False, False, False]),
        "b": torch.ones(2, 3, dtype=torch.bool),
    })  # fmt: skip
    assert masks.num_weights() == 10
    assert masks.num_remaining() == 7
    assert masks.sparsity() == pytest.approx(0.3)
    report = masks.report()
    assert report["layers"][0] == {
        "name": "a", "shape": [4], "size": 4, "remaining": 1, "sparsity": 0.75,
    }  # fmt: skip
    assert report["total"] == {"size": 10, "remaining": 7, "sparsity": pytest.approx(0.3)}
    path = tmp_path / "masks.pt"
    masks.save(path)
    loaded = Masks.load(path)  # weights_only=True inside
    assert list(loaded) == ["a", "b"]
    assert all(torch.equal(loaded[name], masks[name]) for name in masks)
    assert torch.load(path, weights_only=True)["a"].dtype == torch.bool


def test_masks_are_checked_in_the_one_format() -> None:
    with pytest.raises(ValueError, match="The 'masks' parameter of Masks must be a mapping"):
        Masks({"a": torch.ones(3)})  # not bool
    model = _model()
    with pytest.raises(ValueError, match="Got 'fc.weight', which it does not have"):
        Masks({"fc.weight": torch.ones(3, dtype=torch.bool)}).apply_(model)
    with pytest.raises(ValueError, match=re.escape("shape (30, 24). Got (24, 30) instead")):
        Masks({"3.weight": torch.ones(24, 30, dtype=torch.bool)}).apply_(model)
    with pytest.raises(ValueError, match="'amount' parameter of magnitude_masks must be a float"):
        magnitude_masks(model, 1.5)
    with pytest.raises(ValueError, match="'scope' parameter of magnitude_masks must be one of"):
        magnitude_masks(model, 0.5, scope="unit")


def test_apply_zeroes_exactly_the_pruned_weights() -> None:
    model = _model()
    before = model[3].weight.detach().clone()
    masks = magnitude_masks(model, 0.6, scope="layer")
    masks.apply_(model)
    kept = masks["3.weight"]
    assert torch.equal(model[3].weight[kept], before[kept])
    assert bool((model[3].weight[~kept] == 0).all())


def test_a_model_with_nothing_to_prune_gets_a_clear_error_not_a_torch_cat_failure() -> None:
    # Before: torch.cat's "expected a non-empty list of Tensors" from deep inside.
    with pytest.raises(ValueError, match=re.escape("pass include_output=True to prune the output")):
        magnitude_masks(nn.Linear(3, 2), 0.5)  # its one layer is the output layer
    with pytest.raises(ValueError, match="must have a Linear or convolution layer to prune"):
        magnitude_masks(nn.Sequential(nn.BatchNorm1d(3)), 0.5, include_output=True)
    with pytest.raises(ValueError, match="'names' parameter of magnitude_masks must name at le"):
        magnitude_masks(_model(), 0.5, names=[])
    assert int(magnitude_masks(nn.Linear(3, 2), 0.5, include_output=True)["weight"].sum()) == 3


@pytest.mark.parametrize(
    "handed_out",
    [
        lambda masks: [masks["3.weight"]],
        lambda masks: list(masks.values()),
        lambda masks: [mask for _, mask in masks.items()],
        lambda masks: list(masks.state_dict().values()),
        lambda masks: list(Pruning(masks).state_dict()["masks"].values()),  # checkpoints
    ],
    ids=["getitem", "values", "items", "state_dict", "pruning_state_dict"],
)
def test_changing_what_masks_hand_out_leaves_the_masks_unchanged(handed_out: object) -> None:
    # Before, these were the Masks' own tensors: filling one in place changed the masks
    # (and what a checkpoint and a resumed run enforce), despite "a Masks never changes".
    masks = magnitude_masks(_model(), 0.5)
    expected = {name: masks[name].clone() for name in masks}
    for mask in handed_out(masks):  # type: ignore[operator]
        mask.fill_(True)
    assert all(torch.equal(masks[name], expected[name]) for name in masks)
    assert masks.fraction_remaining() == pytest.approx(0.5, abs=1e-2)
    assert "3.weight" in masks
    assert "5.weight" not in masks


def test_changing_what_a_ticket_hands_out_leaves_the_ticket_unchanged() -> None:
    model = _model()
    ticket = Ticket(magnitude_masks(model, 0.5), model.state_dict())
    assert ticket.weights is not None
    expected = {name: value.clone() for name, value in model.state_dict().items()}
    ticket.weights["3.weight"].zero_()
    with pytest.raises(TypeError):
        ticket.weights["3.weight"] = torch.zeros(30, 24)  # type: ignore[index]
    assert set(ticket.weights) == set(expected)
    assert all(torch.equal(ticket.weights[name], expected[name]) for name in expected)
    other = _model(seed=1)
    ticket.apply_(other)
    kept = ticket.masks["3.weight"]
    assert torch.equal(other[3].weight[kept], expected["3.weight"][kept])


def test_masks_compare_by_names_shapes_and_values() -> None:
    # Before, == compared the masks' tensors as a Mapping does: "Boolean value of Tensor
    # with more than one value is ambiguous".
    masks = magnitude_masks(_model(), 0.5)
    assert masks == magnitude_masks(_model(), 0.5)
    assert masks == Masks(masks.state_dict())
    assert masks == masks.state_dict()  # a plain mapping of the same masks
    assert masks != magnitude_masks(_model(), 0.6)  # other values
    assert masks != magnitude_masks(_model(), 0.5, include_output=True)  # more names
    flat = {name: mask.flatten() for name, mask in masks.items()}
    assert masks != Masks(flat)  # the same values in other shapes
    assert masks != {name: mask.float() for name, mask in masks.items()}  # not masks
    assert masks != "masks"
    with pytest.raises(TypeError, match="unhashable"):
        hash(masks)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_masks_on_different_devices_compare_by_value() -> None:
    masks = magnitude_masks(_model(), 0.5)
    on_gpu = Masks({name: mask.cuda() for name, mask in masks.items()})
    assert masks == on_gpu
    assert on_gpu == masks


def test_tickets_and_round_results_compare_their_masks_and_weights() -> None:
    model = _model()
    masks = magnitude_masks(model, 0.5)
    ticket = Ticket(masks, model.state_dict())
    assert ticket == Ticket(Masks(masks), model.state_dict())
    assert ticket != Ticket(masks, _model(seed=1).state_dict())
    assert ticket != Ticket(masks)
    assert Ticket(masks) == Ticket(Masks(masks))
    assert ticket != Ticket(magnitude_masks(model, 0.6), model.state_dict())
    result = RoundResult(1, "ticket", 0.5, {"test_accuracy": 0.9}, masks)
    assert result == RoundResult(1, "ticket", 0.5, {"test_accuracy": 0.9}, Masks(masks))
    assert result != RoundResult(1, "ticket", 0.5, {"test_accuracy": 0.9}, Masks({}))
