"""Hessian-vector products against the exact Hessian, and the model left as found."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from gradwise import curvature
from gradwise.curvature import Hessian, hessian_vector_product
from gradwise.data import Dataset, iterate_once
from gradwise.regularize import Penalty, l2_penalty

from .models import classification_batch, cross_entropy, dense_hessian, exact_hessian, mlp


@pytest.fixture(scope="module")
def small():
    model = mlp((8, 16, 4))
    inputs, targets = classification_batch(num_samples=32, num_features=8, num_classes=4)
    return model, inputs, targets, exact_hessian(model, cross_entropy, inputs, targets)


def test_products_match_the_exact_hessian(small):
    model, inputs, targets, exact = small
    hessian = Hessian(model, cross_entropy, (inputs, targets))
    assert hessian.num_parameters == exact.shape[0] == 8 * 16 + 16 + 16 * 4 + 4
    vectors = torch.randn(3, exact.shape[0], dtype=torch.float64)
    for vector in vectors:
        torch.testing.assert_close(hessian @ vector, exact @ vector, rtol=1e-10, atol=1e-12)
    assert hessian.num_products == 3
    one_shot = hessian_vector_product(model, cross_entropy, (inputs, targets), vectors[0])
    torch.testing.assert_close(one_shot, exact @ vectors[0], rtol=1e-10, atol=1e-12)


def test_several_batches_average_weighted_by_size(small):
    model, inputs, targets, exact = small  # exact: the mean loss over all 32 samples
    batches = [
        (inputs[:5], targets[:5]),
        (inputs[5:20], targets[5:20]),
        (inputs[20:], targets[20:]),
    ]
    vector = torch.randn(exact.shape[0], dtype=torch.float64)
    expected = exact @ vector
    torch.testing.assert_close(Hessian(model, cross_entropy, batches) @ vector, expected)
    # A generator is read once and kept: later products see the same batches.
    hessian = Hessian(model, cross_entropy, (batch for batch in batches))
    torch.testing.assert_close(hessian @ vector, expected)
    torch.testing.assert_close(hessian @ vector, expected)
    # Kept graphs (the default) and graphs rebuilt per product give the same products.
    for keep in (0, 1, 16):
        hessian = Hessian(model, cross_entropy, batches, keep_graphs=keep)
        for _ in range(2):
            torch.testing.assert_close(hessian @ vector, expected)


def test_gradient_matches_autograd(small):
    model, inputs, targets, _ = small
    reference = copy.deepcopy(model)
    cross_entropy(reference(inputs), targets).backward()
    expected = torch.cat([p.grad.reshape(-1) for p in reference.parameters()])
    torch.testing.assert_close(
        Hessian(model, cross_entropy, (inputs, targets)).gradient(), expected
    )


def test_frozen_parameters_are_held_fixed(small):
    model, inputs, targets, _ = small
    model = copy.deepcopy(model)
    model[0].weight.requires_grad_(False)
    exact = exact_hessian(model, cross_entropy, inputs, targets)
    hessian = Hessian(model, cross_entropy, (inputs, targets))
    assert hessian.num_parameters == exact.shape[0] == 16 + 16 * 4 + 4
    vector = torch.randn(exact.shape[0], dtype=torch.float64)
    torch.testing.assert_close(hessian @ vector, exact @ vector)
    pieces = hessian.unflatten(vector)
    assert list(pieces) == ["0.bias", "2.weight", "2.bias"]
    assert pieces["2.weight"].shape == (4, 16)


def test_a_loss_linear_in_the_parameters_has_zero_hessian():
    model = nn.Linear(3, 2).double()
    inputs = torch.randn(4, 3, dtype=torch.float64)
    vector = torch.randn(8, dtype=torch.float64)
    product = hessian_vector_product(model, lambda out, _: out.sum(), (inputs, None), vector)
    assert torch.equal(product, torch.zeros(8, dtype=torch.float64))


class Net(nn.Module):
    """Batch norm (running statistics) and dropout (RNG): everything a probe could disturb."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(6, 10), nn.BatchNorm1d(10), nn.Tanh(), nn.Dropout(0.3), nn.Linear(10, 3)
        )

    def forward(self, x):
        return self.body(x)


def snapshot(model):
    return (
        {name: t.detach().clone() for name, t in model.state_dict().items()},
        [m.training for m in model.modules()],
        {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()},
        torch.get_rng_state(),
    )


def assert_same(before, after):
    for name, tensor in before[0].items():
        assert torch.equal(tensor, after[0][name]), name
    assert before[1] == after[1]
    for name, grad in before[2].items():
        assert (grad is None) == (after[2][name] is None), name
        assert grad is None or torch.equal(grad, after[2][name]), name
    assert torch.equal(before[3], after[3])


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_every_function_leaves_the_model_as_found(mode):
    torch.manual_seed(3)
    model = Net().double()
    inputs, targets = classification_batch(num_samples=16, num_features=6, num_classes=3)
    cross_entropy(model(inputs), targets).backward()  # an existing .grad must survive
    model.body[1].eval()  # a mixed train/eval state must survive too
    model.body[4].bias.grad = None
    data = [(inputs[:8], targets[:8]), (inputs[8:], targets[8:])]
    before = snapshot(model)
    options = {"mode": mode}
    curvature.eigenvalues(model, cross_entropy, data, k=2, max_iterations=200, **options)
    curvature.trace(model, cross_entropy, data, num_probes=3, **options)
    curvature.trace(model, cross_entropy, data, num_probes=9, method="hutch++", **options)
    curvature.eigenvalue_density(model, cross_entropy, data, num_iterations=5, **options)
    curvature.condition_number(model, cross_entropy, data, max_iterations=200, **options)
    curvature.find_negative_curvature(model, cross_entropy, data, max_iterations=200, **options)
    curvature.max_stable_lr(model, cross_entropy, data, momentum=0.9, **options)
    hessian_vector_product(
        model,
        cross_entropy,
        data,
        torch.ones(sum(p.numel() for p in model.parameters()), dtype=torch.float64),
        **options,
    )
    assert_same(before, snapshot(model))


def test_train_mode_fixes_the_dropout_masks():
    torch.manual_seed(4)
    model = Net().double().train()
    inputs, targets = classification_batch(num_samples=16, num_features=6, num_classes=3)
    hessian = Hessian(model, cross_entropy, (inputs, targets), mode="train")
    u, v = torch.randn(2, hessian.num_parameters, dtype=torch.float64)
    hu, hv = hessian @ u, hessian @ v
    # One fixed operator: repeatable and symmetric (a fresh mask per call would be neither).
    torch.testing.assert_close(hessian @ u, hu, rtol=0, atol=0)
    torch.testing.assert_close(torch.dot(v, hu), torch.dot(u, hv))
    # ... and different from eval mode, where dropout is off and batch norm uses running stats.
    eval_product = Hessian(model, cross_entropy, (inputs, targets)) @ u
    assert not torch.allclose(eval_product, hu)


def test_eval_mode_is_the_hessian_of_the_eval_model():
    torch.manual_seed(5)
    model = Net().double().train()
    inputs, targets = classification_batch(num_samples=16, num_features=6, num_classes=3)
    exact = exact_hessian(model, cross_entropy, inputs, targets)  # evaluates in eval mode
    vector = torch.randn(exact.shape[0], dtype=torch.float64)
    torch.testing.assert_close(
        Hessian(model, cross_entropy, (inputs, targets)) @ vector, exact @ vector
    )


def test_float32_models_work_in_float32():
    model = mlp((4, 8, 3)).float()
    inputs, targets = classification_batch(num_samples=16, num_features=4, num_classes=3)
    hessian = Hessian(model, cross_entropy, (inputs.float(), targets))
    assert (hessian @ torch.ones(hessian.num_parameters)).dtype == torch.float32
    values = curvature.eigenvalues(model, cross_entropy, (inputs.float(), targets), k=1, tol=1e-3)
    assert values.dtype == torch.float32


def test_float32_batches_of_a_dataset_work_with_a_float64_model(small):
    # A gradwise Dataset holds float32 inputs; the docs ask for model.double() and accept
    # iterate_once(...). The inputs take the model's dtype (F.linear refused Float and Double).
    model, inputs, targets, exact = small
    dataset = Dataset(inputs.float(), targets)
    hessian = Hessian(model, cross_entropy, iterate_once(dataset, 8))
    vector = torch.randn(exact.shape[0], dtype=torch.float64)
    reference = Hessian(model, cross_entropy, (inputs.float().double(), targets))
    torch.testing.assert_close(hessian @ vector, reference @ vector)
    trace = curvature.trace(model, cross_entropy, list(iterate_once(dataset, 8)), num_probes=8)
    assert math.isfinite(trace)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda m, b: Hessian(m, cross_entropy, 3),
            r"The 'data' parameter of Hessian must be an \(inputs, targets\) batch or an iterable of such batches. Got 3 instead.",
        ),
        (
            lambda m, b: Hessian(m, cross_entropy, []),
            r"must be an \(inputs, targets\) batch .* Got an empty iterable instead.",
        ),
        (
            lambda m, b: Hessian(m, cross_entropy, [b, 5]),
            r"Got an iterable with a non-batch item instead.",
        ),
        (
            lambda m, b: Hessian(m, cross_entropy, b[0]),
            r"The 'data' parameter .* Got a torch.float64 tensor of shape \(4, 3\) on cpu instead.",
        ),
        (
            lambda m, b: Hessian(m, cross_entropy, b, mode="test"),
            r"The 'mode' parameter of Hessian must be one of 'eval', 'train'. Got 'test' instead.",
        ),
        (
            lambda m, b: Hessian("model", cross_entropy, b),
            r"The 'model' parameter of Hessian must be a Module. Got 'model' instead.",
        ),
        (
            lambda m, b: Hessian(m, None, b),
            r"The 'loss_fn' parameter of Hessian must be a callable. Got None instead.",
        ),
        (
            lambda m, b: Hessian(m, F.cross_entropy, b) @ torch.ones(3),
            r"The 'vector' parameter of Hessian.matvec must be a torch.float64 tensor of shape \(8,\) on cpu. Got a torch.float32 tensor of shape \(3,\) on cpu instead.",
        ),
        (
            lambda m, b: Hessian(m, lambda o, t: o, b) @ torch.ones(8, dtype=torch.float64),
            r"The 'loss_fn' parameter of Hessian must return a scalar tensor \(a mean-reduced loss\). Got a torch.float64 tensor of shape \(4, 2\) on cpu instead.",
        ),
        (  # the trace's default Gauss-Newton split evaluates the loss its own way
            lambda m, b: Hessian(m, lambda o, t: o, b).trace(method="gauss-newton"),
            r"The 'loss_fn' parameter of Hessian must return a scalar tensor \(a mean-reduced loss\). Got a torch.float64 tensor of shape \(4, 2\) on cpu instead.",
        ),
        (
            lambda m, b: Hessian(m, lambda o, t: 1.5, b).trace(),
            r"The 'loss_fn' parameter of Hessian must return a scalar tensor \(a mean-reduced loss\). Got 1.5 instead.",
        ),
        (
            lambda m, b: Hessian(nn.Linear(2, 2).requires_grad_(False), cross_entropy, b),
            r"The 'model' parameter of Hessian must be a Module with trainable parameters. Got one with none instead.",
        ),
        (
            lambda m, b: Hessian(
                nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2).double()), cross_entropy, b
            ),
            r"must be a Module whose trainable parameters share one dtype and device. Got a Module with torch.float32 on cpu, torch.float64 on cpu instead.",
        ),
    ],
)
def test_bad_input_is_named_in_the_one_format(call, message):
    model = nn.Linear(3, 2).double()
    batch = (torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 1, 0]))
    with pytest.raises(ValueError, match=message):
        call(model, batch)


# -- bad values stop at the boundary, not in an eigensolver ---------------------------------


def every_function(vector_size):
    """Each public entry point, as ``call(model, data)``."""
    return {
        "Hessian @ v": lambda m, d: (
            Hessian(m, cross_entropy, d) @ torch.ones(vector_size, dtype=torch.float64)
        ),
        "hessian_vector_product": lambda m, d: hessian_vector_product(
            m, cross_entropy, d, torch.ones(vector_size, dtype=torch.float64)
        ),
        "eigenvalues": lambda m, d: curvature.eigenvalues(m, cross_entropy, d, k=2),
        "trace": lambda m, d: curvature.trace(m, cross_entropy, d),
        "trace-hutchinson": lambda m, d: curvature.trace(m, cross_entropy, d, method="hutchinson"),
        "eigenvalue_density": lambda m, d: curvature.eigenvalue_density(m, cross_entropy, d),
        "condition_number": lambda m, d: curvature.condition_number(m, cross_entropy, d),
        "find_negative_curvature": lambda m, d: curvature.find_negative_curvature(
            m, cross_entropy, d
        ),
        "max_stable_lr": lambda m, d: curvature.max_stable_lr(m, cross_entropy, d),
    }


FUNCTIONS = list(every_function(1))


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()  # 67 parameters


def small_batch(num_samples=16):
    return torch.randn(num_samples, 4, dtype=torch.float64), torch.randint(0, 3, (num_samples,))


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_parameters_are_named_before_any_product(name, bad):
    # Before: linalg.eigh "failed to converge" from inside Lanczos, or NaN results.
    model = small_net()
    with torch.no_grad():
        model[2].bias[1] = bad
    kind = "NaN" if bad != bad else "inf"
    message = (
        r"The 'model' parameter of Hessian must be a Module with finite parameters. Got a "
        rf"Module with non-finite entries in '2.bias' \(1 {kind} of 3 entries\) instead; reload "
        "them from a checkpoint"
    )
    with pytest.raises(ValueError, match=message):
        every_function(67)[name](model, small_batch())


@pytest.mark.parametrize("name", FUNCTIONS)
def test_a_batch_without_samples_is_refused(name):
    # Before: the mean loss over 0 samples is NaN, and Lanczos failed in linalg.eigh; as one
    # of several batches it weighed 0 and the Gauss-Newton trace raised an IndexError.
    inputs, targets = small_batch()
    call = every_function(67)[name]
    with pytest.raises(
        ValueError,
        match=r"The 'data' parameter of Hessian must hold batches with at least one sample "
        r"each. Got the batch with inputs of shape \(0, 4\) instead; leave the empty batches out.",
    ):
        call(small_net(), (inputs[:0], targets[:0]))
    with pytest.raises(ValueError, match=r"Got batch 2 of 3 with inputs of shape \(0, 4\)"):
        call(small_net(), [(inputs, targets), (inputs[:0], targets[:0]), (inputs, targets)])


@pytest.mark.parametrize("name", FUNCTIONS)
def test_a_non_finite_loss_says_which_batch(name):
    inputs, targets = small_batch()
    broken = inputs.clone()
    broken[3, 1] = float("nan")
    with pytest.raises(
        ValueError,
        match=r"The 'loss_fn' parameter of Hessian must return a finite loss. Got nan on batch "
        r"2 of 2 instead. The trainable parameters are finite: look for NaN or inf in that "
        r"batch's inputs or targets",
    ):
        every_function(67)[name](small_net(), [(inputs, targets), (broken, targets)])


class Cusp(nn.Module):
    """|w|^1.5 at w = 0: a finite loss and gradient, an infinite second derivative."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2, dtype=torch.float64))

    def forward(self, x):
        return x * self.w.abs().pow(1.5).sum()


def test_a_non_finite_product_or_vector_is_refused():
    data = (torch.ones(3, dtype=torch.float64), None)
    hessian = Hessian(Cusp(), lambda out, _: out.mean(), data)
    with pytest.raises(
        ValueError,
        match=r"The Hessian-vector product is not finite, though the loss, the parameters and "
        r"the vector are: 2 NaN of 2 entries. The loss's second derivative is infinite",
    ):
        hessian @ torch.ones(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="The Hessian-vector product is not finite"):
        curvature.eigenvalues(Cusp(), lambda out, _: out.mean(), data, k=1)
    with pytest.raises(
        ValueError,
        match=r"The 'vector' parameter of Hessian.matvec must be finite. Got a torch.float64 "
        r"tensor of shape \(67,\) on cpu with 1 inf of 67 entries instead.",
    ):
        Hessian(small_net(), cross_entropy, small_batch()) @ torch.tensor(
            [float("inf")] + [0.0] * 66, dtype=torch.float64
        )


class HalfSquaredNorm(nn.Module):
    """x.mean() * ||w||^2 / 2 in float32: H = I at x = 1."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(4))

    def forward(self, x):
        return x.mean() * self.w.pow(2).sum() / 2


def test_finite_entries_whose_sum_overflows_are_not_taken_for_non_finite():
    # The finiteness checks sum first: 4 x 1e38 overflows float32, and only the exact
    # entry-by-entry check that follows may decide.
    vector = torch.full((4,), 1e38)
    assert not torch.isfinite(vector.sum())
    hessian = Hessian(HalfSquaredNorm(), lambda out, _: out, (torch.ones(3), None))
    torch.testing.assert_close(hessian @ vector, vector, rtol=1e-6, atol=0)


# -- mode="train" takes the model as it trains ---------------------------------------------


def normalized_net():
    """Batch norm with running statistics unlike any batch's: eval and train mode differ."""
    torch.manual_seed(6)
    model = nn.Sequential(
        nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 5), nn.BatchNorm1d(5),
        nn.Tanh(), nn.Linear(5, 3),
    ).double()  # fmt: skip
    with torch.no_grad():
        for norm in (model[1], model[4]):
            norm.running_mean.uniform_(-1, 1)
            norm.running_var.uniform_(0.5, 2)
    return model


def hessian_as_flagged(model, inputs, targets):
    """The oracle: the dense Hessian of the loss with every module in the mode it is in."""
    replica = copy.deepcopy(model)  # train-mode batch norm updates the replica's statistics
    return dense_hessian(
        model, lambda params: cross_entropy(functional_call(replica, params, (inputs,)), targets)
    )


def test_train_mode_keeps_a_batch_norm_frozen_in_eval_mode():
    # Before: mode="train" called model.train(), which put the frozen batch norm back in
    # training mode (batch statistics): a Hessian of another network than the one trained.
    model = normalized_net().train()
    model[1].eval()  # frozen by the user; model[4] trains
    inputs, targets = small_batch(num_samples=24)
    flags = [module.training for module in model.modules()]
    exact = hessian_as_flagged(model, inputs, targets)
    hessian = Hessian(model, cross_entropy, (inputs, targets), mode="train")
    vectors = torch.randn(3, exact.shape[0], dtype=torch.float64)
    for vector in vectors:
        torch.testing.assert_close(hessian @ vector, exact @ vector, rtol=1e-10, atol=1e-12)
    top = curvature.eigenvalues(model, cross_entropy, (inputs, targets), k=2, mode="train")
    torch.testing.assert_close(top, torch.linalg.eigvalsh(exact).flip(0)[:2])
    assert [module.training for module in model.modules()] == flags
    # The frozen layer matters: with both batch norms training the Hessian differs.
    model[1].train()
    assert not torch.allclose(
        hessian_as_flagged(model, inputs, targets) @ vectors[0], exact @ vectors[0]
    )


class FrozenNormNet(nn.Module):
    """The usual way to freeze a batch norm for good: a train() override keeps it in eval."""

    def __init__(self):
        super().__init__()
        self.body = normalized_net()

    def forward(self, x):
        return self.body(x)

    def train(self, mode=True):
        super().train(mode)
        self.body[1].eval()
        return self


def test_train_mode_trains_a_model_found_in_eval_mode_as_a_training_loop_would():
    inputs, targets = small_batch(num_samples=24)
    for model in (normalized_net(), FrozenNormNet().double()):
        model.eval()
        trained_as = copy.deepcopy(model).train()  # what a training loop's model.train() gives
        exact = hessian_as_flagged(trained_as, inputs, targets)
        vector = torch.randn(exact.shape[0], dtype=torch.float64)
        product = Hessian(model, cross_entropy, (inputs, targets), mode="train") @ vector
        torch.testing.assert_close(product, exact @ vector, rtol=1e-10, atol=1e-12)
        assert not any(module.training for module in model.modules())  # restored


# -- a penalty inside loss_fn is part of H --------------------------------------------------


def test_a_penalty_in_the_loss_is_part_of_the_hessian():
    # Before: loss_fn ran after functional_call had put the parameters back, so a penalty
    # reading model.parameters() saw the originals and its 2 * decay * I was left out of H.
    model = small_net()
    inputs, targets = small_batch(num_samples=32)
    decay = 0.05

    def decayed(outputs, labels):
        return cross_entropy(outputs, labels) + decay * sum(
            p.square().sum() for p in model.parameters()
        )

    def weights_penalized(outputs, labels):
        return cross_entropy(outputs, labels) + l2_penalty(model, decay)  # weights, not biases

    for loss_fn, penalized in ((decayed, ["0.weight", "0.bias", "2.weight", "2.bias"]),
                               (weights_penalized, ["0.weight", "2.weight"])):  # fmt: skip

        def objective(params, penalized=penalized):
            outputs = functional_call(model, params, (inputs,))
            penalty = sum(params[name].square().sum() for name in penalized)
            return cross_entropy(outputs, targets) + decay * penalty

        exact = dense_hessian(model, objective)
        vector = torch.randn(exact.shape[0], dtype=torch.float64)
        product = hessian_vector_product(model, loss_fn, (inputs, targets), vector)
        torch.testing.assert_close(product, exact @ vector, rtol=1e-10, atol=1e-12)
        values = torch.linalg.eigvalsh(exact)
        top = curvature.eigenvalues(model, loss_fn, (inputs, targets), k=2)
        torch.testing.assert_close(top, values.flip(0)[:2])
        # Hutch++ with 3n products sketches all of H: its trace is exact.
        total = curvature.trace(model, loss_fn, (inputs, targets), num_probes=201, method="hutch++")
        assert total == pytest.approx(exact.trace().item(), rel=1e-10)


def test_a_penalty_on_tensors_held_from_before_is_refused():
    # A Penalty picks its tensors once: the originals, not the ones differentiated.
    model = small_net()
    penalty = Penalty(model, l2=0.05)
    held = list(model.parameters())
    for loss_fn in (
        lambda outputs, labels: cross_entropy(outputs, labels) + penalty(),
        lambda outputs, labels: cross_entropy(outputs, labels) + 0.1 * held[2].square().sum(),
    ):
        for method in ("gauss-newton", "stratified"):
            with pytest.raises(
                ValueError,
                match=r"The 'loss_fn' parameter of Hessian must read the model's parameters "
                r"from the model when it is called .* Got a loss that reaches ('0.weight', )?"
                r"'2.weight' through tensors held from before the call",
            ):
                curvature.trace(model, loss_fn, small_batch(), method=method)


# -- a submodule registered twice ------------------------------------------------------------


class SharedLayer(nn.Module):
    """One hidden layer registered under two names (``self.b = self.a``), applied twice."""

    def __init__(self, normalized=False):
        super().__init__()
        torch.manual_seed(7)
        self.a = nn.Sequential(nn.Linear(4, 4), *[nn.BatchNorm1d(4)] * normalized, nn.Tanh())
        self.b = self.a
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        return self.out(self.b(self.a(x)))


def shared_block(normalized=False):
    """``nn.Sequential(*[block] * 2)``: one block registered as '0' and as '1'."""
    torch.manual_seed(7)
    block = nn.Sequential(nn.Linear(4, 4), *[nn.BatchNorm1d(4)] * normalized, nn.Tanh())
    return nn.Sequential(*[block] * 2, nn.Linear(4, 3))


def shared_layer_hessian(parameters, inputs, targets):
    """The oracle, written out: the shared layer twice (its batch norm, if it has one, on
    batch statistics, as in training), then the head."""
    sizes = [p.numel() for p in parameters]

    def loss_of(vector):
        pieces = [x.view_as(p) for x, p in zip(torch.split(vector, sizes), parameters, strict=True)]
        weight, bias, *norm, head_weight, head_bias = pieces
        hidden = inputs
        for _ in range(2):
            hidden = hidden @ weight.T + bias
            if norm:
                hidden = F.batch_norm(hidden, None, None, *norm, training=True)
            hidden = torch.tanh(hidden)
        return cross_entropy(hidden @ head_weight.T + head_bias, targets)

    return torch.autograd.functional.hessian(
        loss_of, torch.cat([p.detach().reshape(-1) for p in parameters])
    )


def registered(model):
    """Every (name, tensor) the model registers, aliases included."""
    return [
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    ]


def assert_registered(model, held):
    found = registered(model)
    assert [name for name, _ in found] == [name for name, _ in held]
    for (name, tensor), (_, original) in zip(found, held, strict=True):
        assert tensor is original, name  # the Parameter an optimizer holds, not a copy
        assert isinstance(tensor, nn.Parameter) == isinstance(original, nn.Parameter), name


@pytest.mark.parametrize("make", [SharedLayer, shared_block], ids=["attribute", "block-list"])
def test_a_submodule_registered_twice_keeps_its_parameters(make):
    # Before: functional_call's weight tying swapped the shared layer once per name, the
    # second swap saving the first's stand-in as the original: the model was left holding
    # plain tensors instead of its Parameters, so an optimizer's step no longer reached
    # the layer (its gradient went to the stand-in) and later Hessians kept the old values.
    model = make().double()
    torch.manual_seed(8)
    inputs, targets = small_batch()
    parameters = list(model.parameters())
    held = registered(model)
    vector = torch.randn(sum(p.numel() for p in parameters), dtype=torch.float64)
    for _ in range(2):
        exact = shared_layer_hessian(parameters, inputs, targets)
        product = hessian_vector_product(model, cross_entropy, (inputs, targets), vector)
        torch.testing.assert_close(product, exact @ vector, rtol=1e-10, atol=1e-12)
        assert_registered(model, held)
        top = curvature.eigenvalues(model, cross_entropy, (inputs, targets), k=2)
        torch.testing.assert_close(top, torch.linalg.eigvalsh(exact).flip(0)[:2])
        # tr G from per-sample Jacobians (vmap over the swapped model), R by probes.
        total = curvature.trace(model, cross_entropy, (inputs, targets), num_probes=40)
        assert total == pytest.approx(exact.trace().item(), rel=0.25)
        assert_registered(model, held)
        with torch.no_grad():  # a training step: the next Hessian is taken after it
            parameters[0].add_(0.5 * torch.randn_like(parameters[0]))


@pytest.mark.parametrize("make", [SharedLayer, shared_block], ids=["attribute", "block-list"])
def test_a_batch_norm_registered_twice_keeps_its_statistics_in_train_mode(make):
    # Before: the cloned running statistics, updated by the pass, were left in the model.
    model = make(normalized=True).double().train()
    torch.manual_seed(8)
    inputs, targets = small_batch()
    parameters = list(model.parameters())
    held = registered(model)
    exact = shared_layer_hessian(parameters, inputs, targets)
    vector = torch.randn(exact.shape[0], dtype=torch.float64)
    before = snapshot(model)
    hessian = Hessian(model, cross_entropy, (inputs, targets), mode="train", keep_graphs=0)
    for _ in range(2):
        torch.testing.assert_close(hessian @ vector, exact @ vector, rtol=1e-10, atol=1e-12)
    assert_registered(model, held)
    assert_same(before, snapshot(model))


class _FrozenFloat32Backbone(nn.Module):
    """A frozen float32 feature layer under a trainable float64 head (mixed dtypes)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Linear(4, 6).requires_grad_(False)
        self.head = nn.Linear(6, 3).double()

    def forward(self, inputs):
        return self.head(torch.tanh(self.backbone(inputs)).double())


def test_a_frozen_float32_backbone_gets_its_inputs_in_float32():
    # The inputs were cast to the trainable parameters' dtype (float64), and the frozen
    # float32 layer they enter refused them ("mat1 and mat2 must have the same dtype").
    model = _FrozenFloat32Backbone()
    inputs, targets = classification_batch(num_samples=16, num_features=4, num_classes=3)
    inputs = inputs.float()
    exact = exact_hessian(model, cross_entropy, inputs, targets)
    hessian = Hessian(model, cross_entropy, (inputs, targets))
    assert hessian.num_parameters == exact.shape[0] == 6 * 3 + 3
    vector = torch.randn(exact.shape[0], dtype=torch.float64)
    torch.testing.assert_close(hessian @ vector, exact @ vector)
    values = curvature.eigenvalues(model, cross_entropy, (inputs, targets), k=2)
    torch.testing.assert_close(values, torch.linalg.eigvalsh(exact).flip(0)[:2])


def test_float32_regression_targets_of_a_dataset_work_with_a_float64_model():
    # A Dataset's regression targets are float32; the targets kept that dtype next to the
    # float64 outputs, and huber_loss's derivatives raised "Found dtype Float but expected
    # Double" from inside the product.
    model = mlp((4, 8, 1))
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(16, 4, generator=generator)
    targets = torch.randn(16, 1, generator=generator)
    exact = exact_hessian(model, F.huber_loss, inputs.double(), targets.double())
    batches = list(iterate_once(Dataset(inputs, targets), 8))
    assert batches[0][1].dtype == torch.float32
    hessian = Hessian(model, F.huber_loss, batches)
    vector = torch.randn(exact.shape[0], dtype=torch.float64)
    torch.testing.assert_close(hessian @ vector, exact @ vector)
    trace = curvature.trace(model, F.huber_loss, batches)
    assert trace == pytest.approx(float(torch.trace(exact)), rel=1e-8)
