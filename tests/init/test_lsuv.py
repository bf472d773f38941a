"""LSUV: unit output variance per layer (measured independently), modes and state restored."""

import re
import warnings

import pytest
import torch
from torch import nn

from gradwise import init


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def conv_net():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(32 * 8 * 8, 10),
    )


def mlp():
    return nn.Sequential(
        nn.Linear(30, 200),
        nn.Tanh(),
        nn.Linear(200, 200),
        nn.ReLU(),
        nn.Linear(200, 100),
        nn.ReLU(),
        nn.Linear(100, 5),
    )


def output_variances(model, batch):
    """Each Linear/Conv layer's output variance on ``batch``, by hooks, in eval mode."""
    outputs = {}
    hooks = [
        module.register_forward_hook(lambda m, a, out, name=name: outputs.setdefault(name, out))
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear | nn.Conv2d)
    ]
    training = model.training
    model.eval()
    with torch.no_grad():
        model(batch)
    model.train(training)
    for hook in hooks:
        hook.remove()
    return {name: out.var().item() for name, out in outputs.items()}


@pytest.mark.parametrize(
    ("make", "batch"),
    [
        (conv_net, torch.randn(64, 3, 16, 16, generator=seeded(0))),
        (mlp, 3 + 5 * torch.randn(256, 30, generator=seeded(0))),  # far from unit scale
    ],
)
def test_every_layer_reaches_unit_output_variance_within_5_percent(make, batch):
    torch.manual_seed(0)
    model = make()  # torch's default init, non-zero biases included
    achieved = init.lsuv(model, batch, generator=1)
    measured = output_variances(model, batch)
    assert list(achieved) == list(measured)  # every layer, in forward order
    for name, variance in measured.items():
        assert abs(variance - 1) < 0.05, (name, variance)
        assert achieved[name] == pytest.approx(variance, rel=1e-2)


def test_without_rescaling_the_variances_are_far_from_one():
    # Guards the test above: the orthogonal pre-step alone does not give unit variance.
    model = mlp()
    batch = 3 + 5 * torch.randn(256, 30, generator=seeded(0))
    for module in model:
        if isinstance(module, nn.Linear):
            init.orthogonal()(module.weight, generator=seeded(1))
    assert max(abs(v - 1) for v in output_variances(model, batch).values()) > 1


def test_weights_are_rescaled_orthogonal_matrices():
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32))
    init.lsuv(model, torch.randn(500, 64, generator=seeded(0)), generator=0)
    for layer in (model[0], model[2]):
        gram = layer.weight @ layer.weight.T
        scale = gram.diagonal().mean()
        torch.testing.assert_close(gram / scale, torch.eye(gram.shape[0]), atol=1e-5, rtol=0)


def test_train_eval_modes_and_batchnorm_statistics_are_left_as_they_were():
    model = conv_net().train()
    model[1].eval()  # a mixed state must come back exactly
    before = {name: buffer.clone() for name, buffer in model.named_buffers()}
    modes = [module.training for module in model.modules()]
    init.lsuv(model, torch.randn(32, 3, 16, 16, generator=seeded(0)), generator=0)
    assert [module.training for module in model.modules()] == modes
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, before[name]), name
    assert all(parameter.grad is None for parameter in model.parameters())


def test_same_seed_same_model_and_a_tuple_batch_is_unpacked():
    a, b = mlp(), mlp()
    b.load_state_dict(a.state_dict())  # lsuv keeps the biases it finds
    x = torch.randn(128, 30, generator=seeded(0))
    init.lsuv(a, x, generator=3)
    init.lsuv(b, (x,), generator=torch.Generator().manual_seed(3))
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_initialize_with_lsuv_sets_biases_norms_and_reports_the_variances():
    model = conv_net()
    with torch.no_grad():
        model[1].weight.fill_(3.0)
    batch = torch.randn(64, 3, 16, 16, generator=seeded(0))
    report = init.initialize(model, "lsuv", biases=0.0, data=batch, generator=0)
    measured = output_variances(model, batch)
    rows = {row.name: row for row in report}
    modules = dict(model.named_modules())
    assert [row.name for row in report] == ["0", "1", "3", "8"]
    for name in ("0", "3", "8"):
        layer = modules[name]
        assert rows[name].scheme == "lsuv"
        assert rows[name].output_variance == pytest.approx(measured[name], rel=1e-2)
        assert abs(measured[name] - 1) < 0.05
        assert rows[name].std == pytest.approx(layer.weight.std(correction=0).item(), rel=1e-6)
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
    assert torch.equal(model[1].weight, torch.ones(16))
    assert rows["1"].output_variance is None


def test_a_layer_that_cannot_reach_unit_variance_warns():
    layer = nn.Linear(10, 50)
    with torch.no_grad():
        layer.bias.copy_(torch.linspace(-3, 3, 50))  # the bias alone has variance > 1
    with pytest.warns(
        UserWarning, match=r"LSUV left '' off unit variance by more than 0.05"
    ) as caught:
        variances = init.lsuv(layer, torch.randn(100, 10), max_iterations=3, generator=0)
    assert variances[""] > 1.05
    assert caught[0].filename == __file__  # points at the caller


def test_the_warning_through_initialize_points_at_the_callers_line():
    # It used to point at gradwise's initialize, one frame short of the caller.
    biases = init.uniform(3.0)  # the biases alone have variance 3
    with pytest.warns(UserWarning, match=r"LSUV left '' off unit variance") as caught:
        init.initialize(
            nn.Linear(10, 50), "lsuv", biases=biases, generator=0, data=torch.randn(100, 10)
        )
    assert len(caught) == 1
    assert caught[0].filename == __file__


def test_a_silent_layer_raises():
    model = nn.Sequential(nn.Linear(10, 10, bias=False), nn.ReLU(), nn.Linear(10, 3))
    with pytest.raises(ValueError, match=r"cannot rescale layer '0': its output has variance 0"):
        init.lsuv(model, torch.zeros(20, 10))


def test_layers_the_forward_pass_skips_are_left_out():
    class Partial(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(8, 8)
            self.unused = nn.Linear(8, 8)

        def forward(self, x):
            return self.used(x)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        variances = init.lsuv(Partial(), torch.randn(64, 8), generator=0)
    assert list(variances) == ["used"]


ERRORS = [
    (
        lambda: init.initialize(mlp(), "lsuv"),
        "The 'data' parameter of initialize must be a batch of the model's inputs (a tensor, "
        "or a tuple of its positional arguments) when weights='lsuv'. Got None instead.",
    ),
    (
        lambda: init.lsuv(mlp(), None),
        "The 'batch' parameter of lsuv must be a batch of the model's inputs (a tensor, or a "
        "tuple of its positional arguments). Got None instead.",
    ),
    (
        lambda: init.lsuv(mlp(), torch.randn(4, 30), tolerance=0.0),
        "The 'tolerance' parameter of lsuv must be a float in (0, 1). Got 0.0 instead.",
    ),
    (
        lambda: init.lsuv(mlp(), torch.randn(4, 30), generator=2**64),
        "The 'generator' parameter of lsuv must be a torch.Generator, an int seed in "
        f"[0, 2**64 - 1] or None. Got {2**64} instead.",
    ),
    (
        lambda: init.lsuv(mlp(), torch.randn(4, 30), max_iterations=0),
        "The 'max_iterations' parameter of lsuv must be an int >= 1. Got 0 instead.",
    ),
]


@pytest.mark.parametrize(("make", "message"), ERRORS)
def test_bad_arguments_raise_the_one_error_format(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_an_in_place_activation_after_a_layer_does_not_change_what_is_measured():
    # nn.ReLU(inplace=True) overwrites the layer's output tensor later in the same pass;
    # the variance must be that of the layer's output, not of the activation's.
    def make(inplace):
        return nn.Sequential(
            nn.Linear(50, 100),
            nn.ReLU(inplace=inplace),
            nn.Linear(100, 100),
            nn.ReLU(inplace=inplace),
            nn.Linear(100, 10),
        )

    batch = torch.randn(512, 50, generator=seeded(0))
    in_place, copying = make(True), make(False)
    achieved = init.lsuv(in_place, batch, generator=0)
    copying.load_state_dict(in_place.state_dict())  # the same weights, measured safely
    measured = output_variances(copying, batch)
    for name, variance in measured.items():
        assert abs(variance - 1) < 0.05, (name, variance)
        assert achieved[name] == pytest.approx(variance, rel=1e-2)


def test_a_parametrized_weight_is_rescaled_through_its_parametrization():
    model = nn.Sequential(
        nn.utils.parametrizations.weight_norm(nn.Linear(30, 64)), nn.Tanh(), nn.Linear(64, 5)
    )
    batch = 3 + 5 * torch.randn(256, 30, generator=seeded(0))
    achieved = init.lsuv(model, batch, generator=0)
    for name, variance in output_variances(model, batch).items():
        assert abs(variance - 1) < 0.05, (name, variance)
        assert achieved[name] == pytest.approx(variance, rel=1e-2)


def test_a_bfloat16_model_reaches_unit_output_variance():
    model = mlp().to(torch.bfloat16)
    batch = torch.randn(256, 30, generator=seeded(0)).to(torch.bfloat16)
    achieved = init.lsuv(model, batch, generator=0)
    assert list(achieved) == ["0", "2", "4", "6"]
    for name, variance in output_variances(model, batch).items():
        assert abs(variance - 1) < 0.05, (name, variance)


def test_a_spectral_normed_layer_is_skipped_with_a_warning_that_says_why():
    # spectral_norm divides the weight by its largest singular value, so no rescaling of
    # the weight moves the output variance; advising more iterations would be wrong.
    model = nn.Sequential(
        nn.utils.parametrizations.spectral_norm(nn.Linear(30, 64)),
        nn.ReLU(),
        nn.Linear(64, 5),
    )
    batch = 5 * torch.randn(256, 30, generator=seeded(0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        achieved = init.lsuv(model, batch, generator=0)
    messages = [str(warning.message) for warning in caught]
    assert len(messages) == 1, messages
    assert messages[0].startswith("LSUV skipped '0' (spectral_norm): the parametrization")
    assert caught[0].filename == __file__
    assert list(achieved) == ["2"]
    assert abs(output_variances(model, batch)["2"] - 1) < 0.05
    largest = torch.linalg.matrix_norm(model[0].weight.detach(), ord=2)
    assert largest.item() == pytest.approx(1.0, rel=1e-3)


def test_initialize_with_lsuv_skips_a_spectral_normed_layer_once():
    model = nn.Sequential(
        nn.utils.parametrizations.spectral_norm(nn.Linear(30, 64)),
        nn.ReLU(),
        nn.Linear(64, 5),
    )
    batch = torch.randn(256, 30, generator=seeded(0))
    with pytest.warns(UserWarning, match=r"LSUV skipped '0' \(spectral_norm\)") as caught:
        report = init.initialize(model, "lsuv", data=batch, generator=0)
    assert len(caught) == 1
    assert [row.output_variance is None for row in report] == [True, False]


def test_a_channels_last_model_is_initialized_and_reaches_unit_output_variance():
    # The orthogonal pre-step raised "view size is not compatible" on channels_last conv
    # weights (torch.nn.init.orthogonal_ writes through a view of the weight).
    model = conv_net().to(memory_format=torch.channels_last)
    batch = torch.randn(64, 3, 16, 16, generator=seeded(0)).to(memory_format=torch.channels_last)
    variances = init.lsuv(model, batch, generator=0)
    assert all(abs(v - 1) < 0.05 for v in output_variances(model, batch).values())
    assert set(variances) == {"0", "3", "8"}
    init.initialize(model, "orthogonal", generator=0)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_tied_weights_report_the_variance_each_layer_ends_with():
    # '2' shares '0''s weight, so rescaling '2' rescales '0' again: the result said '0' was
    # at 1.019 (its variance before '2' was done) when it ended at 0.952.
    encoder, decoder = nn.Linear(8, 8), nn.Linear(8, 8)
    decoder.weight = encoder.weight
    model = nn.Sequential(encoder, nn.Linear(8, 8), decoder)
    batch = torch.randn(512, 8, generator=seeded(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # whether a tied layer lands within tolerance varies
        variances = init.lsuv(model, batch, generator=0)
    measured = output_variances(model, batch)
    assert variances.keys() == measured.keys()
    for name, variance in variances.items():
        assert variance == pytest.approx(measured[name] * (4095 / 4096), rel=1e-6)
