"""The losses against independent oracles: a loop SVM loss, torch, scikit-learn, closed forms."""

import math
import pickle
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score

from gradwise.losses import (
    LOSS_NAMES,
    accuracy,
    chance_loss,
    get_loss,
    mean_squared_error,
    multiclass_hinge,
)

GENERATOR = torch.Generator().manual_seed(0)
MARGINS = [0.0, 0.5, 1.0, 3.0]


def random_batch(batch=16, classes=5, scale=1.0):
    scores = scale * torch.randn(batch, classes, dtype=torch.float64, generator=GENERATOR)
    targets = torch.randint(classes, (batch,), generator=GENERATOR)
    return scores, targets


def svm_loss_loop(scores, targets, margin):
    """cs231n's multiclass SVM loss, one sample and one class at a time."""
    scores, targets = scores.detach().numpy(), targets.numpy()
    total = 0.0
    for i in range(scores.shape[0]):
        correct = scores[i, targets[i]]
        for j in range(scores.shape[1]):
            if j != targets[i]:
                total += max(0.0, scores[i, j] - correct + margin)
    return total / scores.shape[0]


def svm_gradient_loop(scores, targets, margin):
    """d loss / d scores for the loss above: +1/N per violated margin, -(count)/N at y_i."""
    scores, targets = scores.detach().numpy(), targets.numpy()
    gradient = np.zeros_like(scores)
    batch = scores.shape[0]
    for i in range(batch):
        for j in range(scores.shape[1]):
            if j != targets[i] and scores[i, j] - scores[i, targets[i]] + margin > 0:
                gradient[i, j] += 1.0 / batch
                gradient[i, targets[i]] -= 1.0 / batch
    return torch.from_numpy(gradient)


@pytest.mark.parametrize("margin", MARGINS)
@pytest.mark.parametrize(("batch", "classes", "scale"), [(16, 5, 1.0), (7, 10, 0.3), (1, 2, 2.0)])
def test_multiclass_hinge_matches_the_loop_svm_loss(margin, batch, classes, scale):
    scores, targets = random_batch(batch, classes, scale)
    loss = multiclass_hinge(scores, targets, margin)
    assert loss.dtype == torch.float64
    assert loss.shape == ()
    assert loss.item() == pytest.approx(svm_loss_loop(scores, targets, margin), rel=1e-12)


def test_multiclass_hinge_default_margin_is_one():
    scores, targets = random_batch()
    assert multiclass_hinge(scores, targets).item() == pytest.approx(
        svm_loss_loop(scores, targets, 1.0), rel=1e-12
    )


def test_multiclass_hinge_is_zero_when_the_correct_score_wins_by_the_margin():
    scores = torch.tensor([[5.0, 3.9, 1.0], [0.0, 0.0, 2.0]], dtype=torch.float64)
    targets = torch.tensor([0, 2])
    assert multiclass_hinge(scores, targets, margin=1.0).item() == 0.0
    # One margin violated by 0.2 in sample 0: (3.9 - 5 + 1.3) / 2 samples.
    assert multiclass_hinge(scores, targets, margin=1.3).item() == pytest.approx(0.1)


@pytest.mark.parametrize("margin", MARGINS)
def test_multiclass_hinge_gradient_passes_gradcheck(margin):
    scores, targets = random_batch(batch=6, classes=4)
    scores.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: multiclass_hinge(s, targets, margin), (scores,))


@pytest.mark.parametrize("margin", MARGINS)
def test_multiclass_hinge_gradient_matches_the_analytic_svm_gradient(margin):
    scores, targets = random_batch(batch=9, classes=6)
    scores.requires_grad_(True)
    multiclass_hinge(scores, targets, margin).backward()
    torch.testing.assert_close(scores.grad, svm_gradient_loop(scores, targets, margin))


@pytest.mark.parametrize("margin", MARGINS)
@pytest.mark.parametrize("kind", ["random", "integer", "equal"])
def test_multiclass_hinge_is_torch_multi_margin_loss_times_the_classes(margin, kind):
    # torch averages over the classes too; the lectures' loss sums over them. Integer and
    # equal scores land on the kink (s_j - s_y + margin == 0), where both torch and the
    # lectures' vectorized gradient (margins > 0) count the margin as met: gradient 0.
    # QA: clamp_min passed the gradient at the kink, so a zero-initialized classifier
    # with margin 0 had loss 0 but a nonzero gradient.
    scores, targets = random_batch(batch=8, classes=5)
    if kind == "integer":
        scores = scores.mul(2).round()
    elif kind == "equal":
        scores = torch.zeros_like(scores)
    scores.requires_grad_(True)
    value = multiclass_hinge(scores, targets, margin)
    reference = 5 * F.multi_margin_loss(scores, targets, margin=margin)
    torch.testing.assert_close(value, reference, rtol=1e-12, atol=0)
    (gradient,) = torch.autograd.grad(value, scores)
    torch.testing.assert_close(gradient, torch.autograd.grad(reference, scores)[0])


@pytest.mark.parametrize("classes", [2, 3, 10, 100])
@pytest.mark.parametrize("margin", [0.5, 1.0, 2.0])
def test_hinge_of_equal_scores_is_its_chance_value(classes, margin):
    scores = torch.full((8, classes), -1.7, dtype=torch.float64)  # any constant score
    targets = torch.randint(classes, (8,), generator=GENERATOR)
    value = get_loss("hinge", margin=margin)(scores, targets).item()
    assert value == pytest.approx((classes - 1) * margin, rel=1e-12)
    assert chance_loss("hinge", classes, margin=margin) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("classes", [2, 3, 10, 100])
def test_cross_entropy_of_zero_logits_is_its_chance_value(classes):
    targets = torch.randint(classes, (8,), generator=GENERATOR)
    value = get_loss("cross_entropy")(torch.zeros(8, classes, dtype=torch.float64), targets)
    assert value.item() == pytest.approx(math.log(classes), rel=1e-12)
    assert chance_loss("cross_entropy", classes) == pytest.approx(value.item(), rel=1e-12)


@pytest.mark.parametrize("classes", [2, 3, 10, 100])
def test_mse_of_zero_outputs_against_one_hot_is_its_chance_value(classes):
    targets = torch.randint(classes, (8,), generator=GENERATOR)
    value = get_loss("mse")(torch.zeros(8, classes, dtype=torch.float64), targets)
    assert value.item() == pytest.approx(1.0 / classes, rel=1e-12)
    assert chance_loss("mse", classes) == pytest.approx(value.item(), rel=1e-12)


def test_chance_loss_hinge_default_margin_is_one():
    assert chance_loss("hinge", 10) == 9.0


def test_mse_with_class_targets_is_mse_against_one_hot_vectors():
    outputs, targets = random_batch(batch=12, classes=7)
    expected = F.mse_loss(outputs, F.one_hot(targets, 7).to(torch.float64))
    torch.testing.assert_close(mean_squared_error(outputs, targets), expected)
    outputs32 = outputs.float()
    result32 = mean_squared_error(outputs32, targets)
    assert result32.dtype == torch.float32
    torch.testing.assert_close(result32, F.mse_loss(outputs32, F.one_hot(targets, 7).float()))


def test_mse_gradient_with_class_targets_is_two_over_n_c_times_the_residual():
    outputs, targets = random_batch(batch=4, classes=3)
    outputs.requires_grad_(True)
    mean_squared_error(outputs, targets).backward()
    residual = outputs.detach() - F.one_hot(targets, 3).to(torch.float64)
    torch.testing.assert_close(outputs.grad, 2.0 * residual / residual.numel())


def test_mse_for_regression_matches_torch():
    outputs = torch.randn(10, 3, generator=GENERATOR)
    targets = torch.randn(10, 3, generator=GENERATOR)
    torch.testing.assert_close(mean_squared_error(outputs, targets), F.mse_loss(outputs, targets))


def test_mse_for_regression_pairs_a_single_output_column_with_flat_targets():
    outputs = torch.randn(10, 1, generator=GENERATOR)
    targets = torch.randn(10, generator=GENERATOR)
    expected = ((outputs[:, 0] - targets) ** 2).mean()
    torch.testing.assert_close(mean_squared_error(outputs, targets), expected)


def test_get_loss_returns_the_named_loss():
    scores, targets = random_batch()
    torch.testing.assert_close(
        get_loss("cross_entropy")(scores, targets), F.cross_entropy(scores, targets)
    )
    torch.testing.assert_close(
        get_loss("hinge", margin=2.5)(scores, targets), multiclass_hinge(scores, targets, 2.5)
    )
    torch.testing.assert_close(
        get_loss("mse")(scores, targets), mean_squared_error(scores, targets)
    )
    assert set(LOSS_NAMES) == {"cross_entropy", "hinge", "mse"}


def test_accuracy_matches_scikit_learn():
    scores, targets = random_batch(batch=200, classes=4)
    value = accuracy(scores, targets)
    assert value.shape == ()
    expected = accuracy_score(targets.numpy(), scores.argmax(dim=1).numpy())
    assert value.item() == pytest.approx(expected)
    assert 0.0 < value.item() < 1.0  # random scores: neither all right nor all wrong


def test_accuracy_of_perfect_and_of_wrong_scores():
    targets = torch.tensor([2, 0, 1, 1])
    perfect = F.one_hot(targets, 3).float()
    assert accuracy(perfect, targets).item() == 1.0
    assert accuracy(-perfect, targets).item() == pytest.approx(0.0)
    assert accuracy(perfect[[0, 1, 2, 2]], torch.tensor([2, 0, 1, 0])).item() == 0.75


def one_format(name, owner):
    return rf"^The '{name}' parameter of {owner} must be .+\. Got .+ instead\.$"


def test_get_loss_and_chance_loss_list_the_valid_names():
    listed = "must be one of 'cross_entropy', 'hinge', 'mse'. Got 'svm' instead."
    for function in (get_loss, chance_loss):
        owner = function.__name__
        arguments = ("svm",) if function is get_loss else ("svm", 10)
        with pytest.raises(
            ValueError, match=f"^The 'name' parameter of {owner} {re.escape(listed)}$"
        ):
            function(*arguments)


def test_get_loss_refuses_a_negative_margin():
    with pytest.raises(ValueError, match=one_format("margin", "get_loss")):
        get_loss("hinge", margin=-1.0)


def test_multiclass_hinge_refuses_a_negative_margin():
    scores, targets = random_batch()
    with pytest.raises(ValueError, match=one_format("margin", "multiclass_hinge")):
        multiclass_hinge(scores, targets, margin=-1.0)


@pytest.mark.parametrize(
    ("make", "owner"),
    [
        (lambda margin: get_loss("hinge", margin=margin), "get_loss"),
        (lambda margin: multiclass_hinge(*random_batch(), margin=margin), "multiclass_hinge"),
        (lambda margin: chance_loss("hinge", 10, margin=margin), "chance_loss"),
    ],
)
def test_an_infinite_margin_is_refused(make, owner):
    message = f"The 'margin' parameter of {owner} must be a finite float >= 0. Got inf instead."
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        make(math.inf)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_chance_loss_refuses_a_bad_number_of_classes(name):
    # Today: hinge gives -1.0 for 0 classes, CE a bare "math domain error", MSE a
    # ZeroDivisionError.
    for num_classes in (0, -3, 2.5):
        with pytest.raises(ValueError, match=one_format("num_classes", "chance_loss")):
            chance_loss(name, num_classes)


def test_chance_loss_refuses_a_negative_margin():
    with pytest.raises(ValueError, match=one_format("margin", "chance_loss")):
        chance_loss("hinge", 10, margin=-1.0)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32])
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_class_indices_of_any_integer_dtype_give_the_int64_loss(name, dtype):
    # QA: uint8/int16 labels (hand-built tensors) hit raw gather/one_hot RuntimeErrors;
    # cross-entropy (torch's nll_loss) refused int16/int32 labels outright.
    torch.manual_seed(0)
    scores = torch.randn(6, 4)
    labels = torch.tensor([0, 3, 1, 2, 2, 0])
    loss = get_loss(name)
    assert loss(scores, labels.to(dtype)).item() == loss(scores, labels).item()


def test_cross_entropy_matches_torch_for_int32_and_probability_targets():
    scores, targets = random_batch(batch=10, classes=4)
    scores.requires_grad_(True)
    loss = get_loss("cross_entropy")
    value = loss(scores, targets.to(torch.int32))
    (gradient,) = torch.autograd.grad(value, scores)
    reference = F.cross_entropy(scores, targets)
    torch.testing.assert_close(value, reference)
    torch.testing.assert_close(gradient, torch.autograd.grad(reference, scores)[0])
    probabilities = torch.softmax(torch.randn(10, 4, dtype=torch.float64), dim=1)
    torch.testing.assert_close(loss(scores, probabilities), F.cross_entropy(scores, probabilities))
    assert torch.autograd.gradcheck(lambda s: loss(s, targets.to(torch.int32)), (scores,))


@pytest.mark.parametrize(
    ("scores", "targets", "name"),
    [
        (torch.zeros(4, 3), F.one_hot(torch.tensor([0, 1, 2, 0]), 3).float(), "targets"),
        (torch.zeros(4, 3), torch.tensor([[0], [1], [2], [0]]), "targets"),
        (torch.zeros(4, 3), torch.tensor([0.0, 1.5, 2.0, 0.0]), "targets"),
        (torch.zeros(4, 3), torch.tensor([0, 1, 2]), "targets"),
        (torch.zeros(3), torch.tensor(1), "scores"),
    ],
    ids=["one-hot", "column", "float", "short", "1-d-scores"],
)
def test_multiclass_hinge_refuses_targets_that_are_not_one_class_index_per_row(
    scores, targets, name
):
    # QA: these raised torch's "Index tensor must have the same number of dimensions" or
    # "Dimension out of range", and float labels were silently truncated (1.5 -> class 1).
    with pytest.raises(ValueError, match=one_format(name, "multiclass_hinge")):
        multiclass_hinge(scores, targets)


@pytest.mark.parametrize(
    ("outputs", "targets"),
    [
        (torch.zeros(4), torch.zeros(4, 1)),  # broadcast to (4, 4): 4x the pairs
        (torch.zeros(4, 3), torch.zeros(4)),  # float class indices: not regression targets
        (torch.zeros(4, 3), torch.zeros(4, 1, dtype=torch.long)),  # one-hot of (4, 1, 3)
        (torch.zeros(4, 3), torch.zeros(4, 2)),
    ],
    ids=["flat-outputs", "float-indices", "index-column", "width"],
)
def test_mse_refuses_shapes_it_would_broadcast(outputs, targets):
    # QA: F.mse_loss broadcast these with only a UserWarning and returned a wrong mean.
    with pytest.raises(ValueError, match=one_format("targets", "mean_squared_error")):
        mean_squared_error(outputs, targets)


def test_accuracy_takes_one_hot_and_probability_targets_as_their_argmax():
    # QA: Mixup hands out one-hot (eval) or mixed (train) rows; accuracy raised a
    # broadcasting RuntimeError on them.
    scores, targets = random_batch(batch=50, classes=4)
    expected = accuracy(scores, targets).item()
    assert accuracy(scores, F.one_hot(targets, 4)).item() == expected
    soft = 0.7 * F.one_hot(targets, 4).float() + 0.3 / 4
    assert accuracy(scores, soft).item() == expected


def test_accuracy_refuses_targets_it_would_broadcast():
    # QA: a (batch, 1) column of labels was compared with every row: a wrong fraction.
    scores, targets = random_batch(batch=6, classes=4)
    for bad in (targets[:, None], targets[:5]):
        with pytest.raises(ValueError, match=one_format("targets", "accuracy")):
            accuracy(scores, bad)


@pytest.mark.parametrize(
    ("outputs", "targets"),
    [
        (torch.zeros(4, 3), torch.ones(4, 3, dtype=torch.long)),  # multi-hot labels as ints
        (torch.zeros(4, 3), torch.zeros(4, 1, dtype=torch.int32)),
        (torch.zeros(4, 1), torch.zeros(3)),  # a (batch, 1) column, squeezed to match
    ],
    ids=["int-rows", "int-column", "float-column"],
)
def test_mse_refusal_names_the_targets_and_outputs_as_given(outputs, targets):
    # QA: the message described the one-hot rows made from integer targets ("Got a
    # torch.float32 tensor of shape (4, 3, 3)" for int64 (4, 3) labels), and the outputs
    # after squeezing a (batch, 1) column.
    message = (
        "The 'targets' parameter of mean_squared_error must be class indices of shape "
        f"{tuple(outputs.shape[:-1])} or float values of the outputs' shape "
        f"{tuple(outputs.shape)}. Got a {targets.dtype} tensor of shape "
        f"{tuple(targets.shape)} instead."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        mean_squared_error(outputs, targets)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_named_loss_pickles_and_computes_the_same_after(name):
    # QA: get_loss("hinge") was a local lambda, which pickle refuses ("Can't pickle local
    # object"), so a trainer holding it could not go to a spawned worker.
    scores, targets = random_batch()
    loss = get_loss(name, margin=0.5)
    restored = pickle.loads(pickle.dumps(loss))
    assert restored(scores, targets).item() == loss(scores, targets).item()
    if name == "hinge":
        assert restored(scores, targets).item() == pytest.approx(
            svm_loss_loop(scores, targets, 0.5), rel=1e-12
        )


LOSS_OWNERS = {
    "cross_entropy": "cross_entropy",
    "hinge": "multiclass_hinge",
    "mse": "mean_squared_error",
}


def out_of_range(owner, low, high, classes, dimension=1, ignored=""):
    """The whole refusal, as a regex: what, the classes it was held to, the fix."""
    noun = "outputs" if owner == "mean_squared_error" else "scores"
    message = (
        f"The 'targets' parameter of {owner} must be class indices in [0, {classes - 1}]"
        f"{ignored}, as the {noun} have {classes} classes (dimension {dimension}). Got "
        f"targets with min {low} and max {high} instead, so check the label encoding "
        "(indices 0..C-1, not 1..C, nor -1 for unlabeled) or the model's output width "
        "(one column per class)."
    )
    return f"^{re.escape(message)}$"


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8])
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_one_based_labels_are_refused_with_their_range_and_the_classes(name, dtype):
    # QA: labels 1..C (a 1-based encoding) reached torch: "Target 5 is out of bounds" (CE),
    # "index 5 is out of bounds for dimension 1" (hinge), "Class values must be smaller
    # than num_classes" (MSE), and on a GPU the hinge's gather a device-side assert.
    scores = torch.zeros(6, 5)
    labels = torch.tensor([1, 5, 2, 3, 4, 1], dtype=dtype)
    ignored = " or -100 (ignored)" if name == "cross_entropy" else ""
    with pytest.raises(ValueError, match=out_of_range(LOSS_OWNERS[name], 1, 5, 5, 1, ignored)):
        get_loss(name)(scores, labels)


@pytest.mark.parametrize("bad", [-1, -100, 10])
@pytest.mark.parametrize("name", ["hinge", "mse"])
def test_losses_without_an_ignore_index_refuse_every_index_outside_the_classes(name, bad):
    labels = torch.tensor([0, 9, bad, 4])
    low, high = min(0, bad), max(9, bad)
    with pytest.raises(ValueError, match=out_of_range(LOSS_OWNERS[name], low, high, 10)):
        get_loss(name)(torch.zeros(4, 10), labels)


def test_cross_entropy_keeps_ignoring_minus_100_and_reports_the_other_labels():
    scores, targets = random_batch(batch=8, classes=4)
    targets[[1, 5]] = -100
    loss = get_loss("cross_entropy")
    torch.testing.assert_close(loss(scores, targets), F.cross_entropy(scores, targets))
    targets[2], targets[6] = -1, 4  # ignored samples leave -1 and 4 as the range seen
    ignored = " or -100 (ignored)"
    with pytest.raises(ValueError, match=out_of_range("cross_entropy", -1, 4, 4, 1, ignored)):
        loss(scores, targets)


@pytest.mark.parametrize(
    ("name", "scores", "targets", "dimension"),
    [
        ("cross_entropy", torch.zeros(3), torch.tensor(3), 0),  # one unbatched row
        ("cross_entropy", torch.zeros(2, 3, 4), torch.full((2, 4), 3), 1),  # (N, C, d)
        ("mse", torch.zeros(2, 4, 3), torch.full((2, 4), 3), 2),  # classes last
    ],
    ids=["ce-unbatched", "ce-spatial", "mse-3d"],
)
def test_the_range_check_reads_the_classes_from_each_loss_class_dimension(
    name, scores, targets, dimension
):
    ignored = " or -100 (ignored)" if name == "cross_entropy" else ""
    match = out_of_range(LOSS_OWNERS[name], 3, 3, 3, dimension, ignored)
    with pytest.raises(ValueError, match=match):
        get_loss(name)(scores, targets)
    scores = torch.randn(scores.shape, generator=GENERATOR)
    in_range = targets - 1
    if name == "cross_entropy":
        expected = F.cross_entropy(scores, in_range)
    else:
        expected = F.mse_loss(scores, F.one_hot(in_range, 3).float())
    torch.testing.assert_close(get_loss(name)(scores, in_range), expected)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_an_empty_batch_passes_the_range_check(name):
    # torch.aminmax refuses an empty tensor; the losses give torch's mean of nothing, NaN.
    value = get_loss(name)(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    assert value.isnan()


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_the_range_check_makes_no_host_read_off_the_cpu(name):
    # Reading a meta tensor's values raises, as reading a CUDA tensor's would cost a sync:
    # off the CPU the labels go to torch unread (it asserts on the device).
    scores = torch.zeros(4, 3, device="meta")
    value = get_loss(name)(scores, torch.full((4,), 7, device="meta"))
    assert value.device.type == "meta"
    assert value.shape == ()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_the_losses_do_not_synchronize_the_gpu(name):
    scores, targets = random_batch(batch=32, classes=10)
    scores, targets = scores.cuda(), targets.cuda()
    loss = get_loss(name)
    loss(scores, targets)  # warm up: first calls may initialize the context
    torch.cuda.set_sync_debug_mode("error")
    try:
        value = loss(scores, targets)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(value.cpu(), loss(scores.cpu(), targets.cpu()))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int16])
@pytest.mark.parametrize("shape", [(10, 1), (10,)], ids=["column", "flat"])
def test_mse_reads_integer_targets_against_one_output_column_as_regression_values(shape, dtype):
    # QA: integer (N, 1) targets (counts, ratings) were taken for class indices and refused
    # as a wrong shape; integer (N,) targets became one-hot rows of one class, so 0 was
    # read as 1.0 and anything else was refused.
    outputs = torch.randn(10, 1, dtype=torch.float64, generator=GENERATOR, requires_grad=True)
    targets = torch.randint(-3, 6, shape, generator=GENERATOR).to(dtype)
    as_values = targets.reshape(10, 1).to(torch.float64)
    value = mean_squared_error(outputs, targets)
    expected = F.mse_loss(outputs, as_values)
    torch.testing.assert_close(value, expected, rtol=1e-15, atol=0)
    (gradient,) = torch.autograd.grad(value, outputs)
    torch.testing.assert_close(gradient, torch.autograd.grad(expected, outputs)[0])
    assert get_loss("mse")(outputs, targets).item() == value.item()


def test_accuracy_refuses_one_score_per_sample_with_a_clear_error():
    # QA: a binary classifier's (batch,) logits ended in a bare IndexError from argmax.
    with pytest.raises(ValueError, match=r"must be \(batch, classes\) scores. Got shape \(5,\)"):
        accuracy(torch.randn(5), torch.randint(0, 2, (5,)))
