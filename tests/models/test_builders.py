"""mlp, cnn1d, cnn2d and build_model: output shapes, the layers each option adds, errors."""

import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from gradwise.models import (
    ACTIVATIONS,
    MODELS,
    HalvingMaxPool,
    build_model,
    cnn1d,
    cnn2d,
    mlp,
)

GENERATOR = torch.Generator().manual_seed(0)

# One input kind per builder: tabular (N, D), signals (N, C, L), images (N, C, H, W).
CASES = [
    (mlp, (12,)),
    (mlp, (1, 8, 8)),
    (cnn1d, (1, 40)),
    (cnn1d, (3, 17)),
    (cnn2d, (1, 28, 28)),
    (cnn2d, (1, 8, 8)),
    (cnn2d, (3, 9, 6)),
]


def inputs(shape, batch=4):
    return torch.randn((batch, *shape), generator=GENERATOR)


def layers_of(model, kind):
    return [layer for layer in model.modules() if type(layer) is kind]


def build_or_refuse(builder, *args, **kwargs):
    """The model, or the message of the ValueError the builder raised instead."""
    try:
        return builder(*args, **kwargs), None
    except ValueError as error:
        return None, str(error)


def one_format(name, owner):
    return rf"^The '{name}' parameter of {owner} must be .+\. Got .+ instead\.$"


@pytest.mark.parametrize(("builder", "shape"), CASES)
def test_output_is_batch_by_num_outputs_in_train_and_eval_mode(builder, shape):
    model = builder(shape, 7)
    x = inputs(shape)
    assert model(x).shape == (4, 7)
    model.eval()
    assert model(x[:1]).shape == (1, 7)


@pytest.mark.parametrize(("builder", "shape"), CASES)
def test_every_model_ends_in_a_plain_linear_read_out(builder, shape):
    model = builder(shape, 7)
    assert isinstance(model, nn.Sequential)
    assert type(model[-1]) is nn.Linear
    assert model[-1].out_features == 7


def test_mlp_with_depth_zero_is_logistic_regression():
    model = mlp((1, 8, 8), 10, depth=0)
    assert [type(layer) for layer in model] == [nn.Flatten, nn.Linear]
    assert (model[1].in_features, model[1].out_features) == (64, 10)


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_mlp_depth_and_width_set_the_hidden_linear_layers(depth):
    model = mlp((3, 4), 5, depth=depth, width=16)
    linears = layers_of(model, nn.Linear)
    assert len(linears) == depth + 1
    shapes = [(layer.in_features, layer.out_features) for layer in linears]
    assert shapes == [(12, 16)] + [(16, 16)] * (depth - 1) + [(16, 5)]
    assert len(layers_of(model, nn.ReLU)) == depth


def test_mlp_hidden_block_order_is_linear_norm_activation_dropout():
    model = mlp((6,), 2, depth=1, width=8, norm="batch", dropout_rate=0.5, activation="tanh")
    assert [type(layer) for layer in model] == [
        nn.Flatten, nn.Linear, nn.BatchNorm1d, nn.Tanh, nn.Dropout, nn.Linear,
    ]  # fmt: skip
    assert model[4].p == 0.5


@pytest.mark.parametrize(
    ("norm", "kind"),
    [("batch", nn.BatchNorm1d), ("layer", nn.LayerNorm), ("group", nn.GroupNorm), (None, None)],
)
def test_mlp_norm_picks_the_feature_normalization_layer(norm, kind):
    model = mlp((6,), 2, depth=3, width=16, norm=norm)
    norms = [m for m in model if isinstance(m, nn.BatchNorm1d | nn.LayerNorm | nn.GroupNorm)]
    assert [type(m) for m in norms] == ([kind] * 3 if kind else [])
    assert model(inputs((6,))).shape == (4, 2)


@pytest.mark.parametrize(("builder", "shape"), [(cnn1d, (1, 40)), (cnn2d, (1, 8, 8))])
def test_cnn_depth_width_and_kernel_size_set_the_convolutions(builder, shape):
    model = builder(shape, 10, depth=3, width=12, kernel_size=7)
    convs = [m for m in model if isinstance(m, nn.Conv1d | nn.Conv2d)]
    assert len(convs) == 3
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 12), (12, 12), (12, 12)]
    for conv in convs:
        assert set(conv.kernel_size) == {7}
        assert set(conv.padding) == {3}  # same padding: the conv keeps the size


@pytest.mark.parametrize(
    ("builder", "shape", "layer", "pool", "drop"),
    [
        (cnn1d, (1, 40), nn.BatchNorm1d, HalvingMaxPool, nn.Dropout1d),
        (cnn2d, (1, 28, 28), nn.BatchNorm2d, HalvingMaxPool, nn.Dropout2d),
    ],
)
def test_cnn_block_order_is_conv_norm_activation_pool_dropout(builder, shape, layer, pool, drop):
    model = builder(shape, 10, depth=1, dropout_rate=0.25, activation="gelu")
    conv = nn.Conv1d if builder is cnn1d else nn.Conv2d
    assert [type(m) for m in model] == [conv, layer, nn.GELU, pool, drop, nn.Flatten, nn.Linear]
    assert model[3].spatial_dims == len(shape) - 1
    assert model[4].p == 0.25


@pytest.mark.parametrize(("builder", "shape"), [(cnn1d, (1, 40)), (cnn2d, (1, 8, 8))])
def test_cnn_dropout_drops_whole_channels_and_zero_rate_adds_none(builder, shape):
    expected = nn.Dropout1d if builder is cnn1d else nn.Dropout2d
    with_dropout = builder(shape, 10, depth=2, dropout_rate=0.3)
    assert len(layers_of(with_dropout, expected)) == 2
    assert not layers_of(with_dropout, nn.Dropout)
    without = builder(shape, 10, depth=2)
    assert not [m for m in without if isinstance(m, nn.Dropout | nn.Dropout1d | nn.Dropout2d)]


@pytest.mark.parametrize(("builder", "dims"), [(cnn1d, 1), (cnn2d, 2)])
@pytest.mark.parametrize(
    ("norm", "kinds"),
    [
        ("batch", {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}),
        ("group", {1: nn.GroupNorm, 2: nn.GroupNorm}),
        ("layer", {1: nn.GroupNorm, 2: nn.GroupNorm}),
        ("instance", {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d}),
    ],
)
def test_cnn_norm_picks_the_layer_for_its_dimension(builder, dims, norm, kinds):
    shape = (2, 16) if dims == 1 else (2, 16, 16)
    model = builder(shape, 3, depth=2, width=16, norm=norm, num_groups=4)
    norms = layers_of(model, kinds[dims])
    assert len(norms) == 2
    if norm == "group":
        assert {m.num_groups for m in norms} == {4}
    if norm == "layer":  # statistics over all channels: one group
        assert {m.num_groups for m in norms} == {1}
    assert model(inputs(shape)).shape == (4, 3)


def test_cnn_without_norm_has_no_normalization_layer():
    model = cnn2d((1, 8, 8), 10, norm=None)
    assert [type(m) for m in model] == [
        nn.Conv2d, nn.ReLU, HalvingMaxPool, nn.Conv2d, nn.ReLU, HalvingMaxPool, nn.Flatten, nn.Linear,
    ]  # fmt: skip


def test_group_count_that_does_not_divide_the_width_falls_back_to_a_divisor():
    model = cnn1d((1, 40), 10, width=12, norm="group", num_groups=8)
    assert {m.num_groups for m in layers_of(model, nn.GroupNorm)} == {math.gcd(12, 8)}
    assert model(inputs((1, 40))).shape == (4, 10)


@pytest.mark.parametrize(
    ("builder", "shape", "options"),
    [
        (mlp, (6,), {"width": 8}),  # the default num_groups=8: 8 groups of one feature
        (mlp, (6,), {"width": 4}),  # the gcd fallback: 4 groups of one feature
        (mlp, (6,), {"width": [12, 6], "num_groups": 6}),
        (cnn2d, (1, 8, 8), {"depth": 5, "width": 8}),  # blocks 4 and 5 see 1x1 maps
        (cnn1d, (1, 4), {"depth": 3, "width": 4, "num_groups": 4}),
    ],
)
def test_group_norm_never_normalizes_groups_of_one_or_two_values(builder, shape, options):
    # QA: a group of one value normalizes to 0, so the layer outputs its bias whatever the
    # input: every sample got the same scores and nothing before the layer could learn.
    # Two values normalize to +-1, whose gradient vanishes (~eps / difference^3).
    model = builder(shape, 3, norm="group", **options)
    values_per_group = []
    for layer in layers_of(model, nn.GroupNorm):
        layer.register_forward_hook(
            lambda m, args, _: values_per_group.append(args[0][0].numel() // m.num_groups)
        )
    scores = model(inputs(shape, batch=6))
    assert values_per_group
    assert min(values_per_group) >= 3
    assert scores.std(dim=0).min() > 1e-4  # the samples do not all score alike
    scores.square().sum().backward()
    first = next(m for m in model if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d))
    assert first.weight.grad.abs().mean() > 1e-3  # the first layer can learn


def test_group_norm_keeps_groups_of_one_channel_where_the_maps_have_several_values():
    # On 4x4 maps a one-channel group is instance normalization: a valid choice to keep.
    model = cnn2d((1, 4, 4), 3, depth=1, width=8, norm="group", num_groups=8)
    assert {m.num_groups for m in layers_of(model, nn.GroupNorm)} == {8}


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_activation_names_give_their_torch_module(activation):
    expected = type(ACTIVATIONS[activation]())
    for builder, shape in CASES[::2]:
        model = builder(shape, 3, depth=2, activation=activation)
        assert len(layers_of(model, expected)) == 2, builder.__name__
        assert model(inputs(shape)).shape == (4, 3)


def test_cnn1d_on_mnist1d_shaped_input_pools_three_times():
    model = cnn1d((1, 40), 10)  # the defaults: depth 3, width 32
    assert len(layers_of(model, HalvingMaxPool)) == 3
    assert model[-1].in_features == 32 * 5  # 40 -> 20 -> 10 -> 5
    assert model(inputs((1, 40), batch=8)).shape == (8, 10)


@pytest.mark.parametrize(
    ("shape", "depth", "pools", "features"),
    [
        ((1, 28, 28), 2, 2, 7 * 7),
        ((1, 28, 28), 5, 4, 1 * 1),  # 28 -> 14 -> 7 -> 3 -> 1, then no more pooling
        ((1, 8, 8), 2, 2, 2 * 2),
        ((1, 8, 8), 5, 3, 1 * 1),  # 8 -> 4 -> 2 -> 1
        ((1, 3, 9), 3, 1, 1 * 4),  # 3x9 -> 1x4: the smaller side is below 2, so no more
    ],
)
def test_cnn2d_pooling_stops_when_the_spatial_size_drops_below_two(shape, depth, pools, features):
    model = cnn2d(shape, 10, depth=depth, width=8)
    assert len(layers_of(model, HalvingMaxPool)) == pools
    assert model[-1].in_features == 8 * features
    assert model(inputs(shape)).shape == (4, 10)


def test_cnn1d_pooling_stops_when_the_length_drops_below_two():
    model = cnn1d((1, 6), 4, depth=4, width=8)  # 6 -> 3 -> 1, then no more pooling
    assert len(layers_of(model, HalvingMaxPool)) == 2
    assert model(inputs((1, 6))).shape == (4, 4)


@pytest.mark.parametrize("norm", ["batch", "layer", "group", "instance"])
def test_deep_cnn2d_on_8x8_trains_with_every_norm_or_refuses_at_build(norm):
    # Past the last pooling the maps are 1x1. A norm that cannot work there must be refused
    # when the model is built (naming the parameter), not fail in the first forward pass.
    model, refusal = build_or_refuse(cnn2d, (1, 8, 8), 10, depth=5, norm=norm)
    if refusal is not None:
        assert re.match(one_format("norm", "cnn2d"), refusal) or "'depth'" in refusal
        return
    model.train()
    assert model(inputs((1, 8, 8))).shape == (4, 10)


def test_build_model_builds_each_registered_model():
    assert set(MODELS) == {"mlp", "cnn1d", "cnn2d"}
    shapes = {"mlp": (1, 8, 8), "cnn1d": (1, 40), "cnn2d": (1, 8, 8)}
    for name, shape in shapes.items():
        model = build_model(name, list(shape), 10, width=16)
        reference = MODELS[name](shape, 10, width=16)
        assert [type(m) for m in model.modules()] == [type(m) for m in reference.modules()]
        assert model(inputs(shape)).shape == (4, 10)


def test_build_model_passes_options_through():
    model = build_model("mlp", (4,), 3, depth=0)
    assert [type(layer) for layer in model] == [nn.Flatten, nn.Linear]


def test_build_model_with_an_unknown_name_lists_the_valid_names():
    message = (
        "The 'name' parameter of build_model must be one of 'mlp', 'cnn1d', 'cnn2d'. "
        "Got 'resnet' instead."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        build_model("resnet", (1, 8, 8), 10)


def test_build_model_refuses_a_bad_input_shape_in_the_one_format():
    with pytest.raises(ValueError, match="'input_shape' parameter of"):
        build_model("mlp", 64, 10)


BAD_ARGUMENTS = [
    ("input_shape", {"input_shape": ()}),
    ("input_shape", {"input_shape": (0, 8)}),
    ("input_shape", {"input_shape": "1x8"}),
    ("num_outputs", {"num_outputs": 0}),
    ("width", {"width": 0}),
    ("activation", {"activation": "swish"}),
    ("norm", {"norm": "weight"}),
    ("dropout_rate", {"dropout_rate": 1.0}),
    ("dropout_rate", {"dropout_rate": -0.1}),
]


@pytest.mark.parametrize(("builder", "shape"), [(mlp, (8,)), (cnn1d, (1, 8)), (cnn2d, (1, 8, 8))])
@pytest.mark.parametrize(("name", "override"), BAD_ARGUMENTS)
def test_bad_common_arguments_raise_the_one_format(builder, shape, name, override):
    arguments = {"input_shape": shape, "num_outputs": 3, **override}
    with pytest.raises(ValueError, match=one_format(name, builder.__name__)):
        builder(**arguments)


def test_mlp_depth_must_be_a_non_negative_int():
    with pytest.raises(ValueError, match=one_format("depth", "mlp")):
        mlp((8,), 3, depth=-1)


@pytest.mark.parametrize("builder", [cnn1d, cnn2d])
def test_cnn_depth_must_be_positive_and_kernel_size_odd(builder):
    shape = (1, 8) if builder is cnn1d else (1, 8, 8)
    owner = builder.__name__
    with pytest.raises(ValueError, match=one_format("depth", owner)):
        builder(shape, 3, depth=0)
    for kernel_size in (0, 4, -3, 3.0, True):
        with pytest.raises(ValueError, match=one_format("kernel_size", owner)):
            builder(shape, 3, kernel_size=kernel_size)


def test_cnn_input_shape_must_match_the_dimension():
    with pytest.raises(ValueError, match=re.escape("must be (channels, length). Got (1, 8, 8)")):
        cnn1d((1, 8, 8), 3)
    with pytest.raises(ValueError, match=re.escape("must be (channels, height, width). Got (")):
        cnn2d((1, 64), 3)


@pytest.mark.parametrize(("builder", "shape"), [(mlp, (8,)), (cnn1d, (1, 8)), (cnn2d, (1, 8, 8))])
def test_num_groups_must_be_a_positive_int(builder, shape):
    # Today 0 and -4 are accepted silently (math.gcd turns them into a group count).
    for num_groups in (0, -4):
        with pytest.raises(ValueError, match=one_format("num_groups", builder.__name__)):
            builder(shape, 3, norm="group", num_groups=num_groups)


def test_mlp_refuses_instance_norm_naming_its_own_parameter():
    # Instance statistics need spatial axes; an MLP's hidden features have none.
    with pytest.raises(ValueError, match=one_format("norm", "mlp")):
        mlp((8,), 3, norm="instance")
    # A misspelt norm is told the mlp's own options, not the CNNs' (QA: 'instance' listed).
    with pytest.raises(ValueError, match="one of 'batch', 'layer', 'group', None. Got 'none'"):
        mlp((8,), 3, norm="none")


@pytest.mark.parametrize(
    ("builder", "shape", "name"),
    [(mlp, (8,), "width"), (mlp, (8,), "depth"), (mlp, (8,), "num_outputs"),
     (cnn2d, (1, 8, 8), "depth")],
)  # fmt: skip
def test_an_integral_float_is_refused_in_the_one_format_or_used_as_its_int(builder, shape, name):
    # The int constraints accept 2.0; the builder must then use it as 2, not crash in torch.
    arguments = {"input_shape": shape, "num_outputs": 3, "depth": 2, "width": 4}
    reference = builder(**arguments)
    model, refusal = build_or_refuse(builder, **{**arguments, name: float(arguments[name])})
    if refusal is not None:
        assert re.match(one_format(name, builder.__name__), refusal)
        return
    assert [type(m) for m in model.modules()] == [type(m) for m in reference.modules()]
    assert model(inputs(shape)).shape == (4, 3)


def test_mlp_width_list_sets_one_hidden_layer_per_entry_as_lenet_300_100():
    model = mlp((1, 28, 28), 10, width=[300, 100])
    shapes = [(layer.in_features, layer.out_features) for layer in layers_of(model, nn.Linear)]
    assert shapes == [(784, 300), (300, 100), (100, 10)]
    assert len(layers_of(model, nn.ReLU)) == 2
    assert mlp((4,), 2, depth=3, width=[5, 6, 7])[-1].in_features == 7
    assert [type(m) for m in mlp((4,), 2, width=[])] == [nn.Flatten, nn.Linear]


@pytest.mark.parametrize(
    ("arguments", "name"),
    [({"width": [8, 0]}, "width"), ({"width": [8, 2.5]}, "width"), ({"width": "8"}, "width"),
     ({"width": [8, 8], "depth": 3}, "depth")],
)  # fmt: skip
def test_mlp_width_list_is_checked_in_the_one_format(arguments, name):
    with pytest.raises(ValueError, match=one_format(name, "mlp")):
        mlp((8,), 3, **arguments)


# A block whose layer, group or instance normalization would see 1 or 2 values per group.
FEW_VALUES_PER_GROUP = [
    (mlp, (6,), {"width": 1, "norm": "layer"}),  # one value: every sample scores alike
    (mlp, (6,), {"width": 2, "norm": "layer"}),  # two values: +-1
    (mlp, (6,), {"width": 2, "norm": "group"}),  # the group fallback stops at 1 group of 2
    (mlp, (6,), {"width": [8, 1], "norm": "group"}),
    (cnn2d, (1, 1, 1), {"depth": 1, "width": 2, "norm": "layer"}),
    (cnn2d, (1, 8, 8), {"depth": 4, "width": 1, "norm": "group"}),  # block 4 sees 1x1 maps
    (cnn1d, (1, 4), {"depth": 2, "norm": "instance"}),  # block 2 sees maps of 2 values
    (cnn2d, (1, 4, 2), {"depth": 2, "norm": "instance"}),  # 4x2, then 2x1
    (cnn2d, (1, 2, 1), {"depth": 1, "norm": "instance"}),  # no depth fixes the input
]


@pytest.mark.parametrize(("builder", "shape", "options"), FEW_VALUES_PER_GROUP)
def test_a_normalization_of_fewer_than_three_values_is_refused_with_a_fix_that_builds(
    builder, shape, options
):
    # QA: mlp(width=1, norm="layer") built and gave every sample the same scores (one
    # value normalizes to 0); the docs promised groups of 3 values or more.
    with pytest.raises(ValueError, match=one_format("norm", builder.__name__)) as refusal:
        builder(shape, 3, **options)
    fix = re.search(r"use a (width >= 3|depth <= (\d+))", str(refusal.value))
    if fix is None:
        assert "need inputs of 3 values or more per channel" in str(refusal.value)
        return
    if fix.group(2) is None:
        widths = options["width"]
        fixed = {"width": [max(w, 3) for w in widths] if isinstance(widths, list) else 3}
    else:
        fixed = {"depth": int(fix.group(2))}
    model = builder(shape, 3, **{**options, **fixed})
    assert model(inputs(shape)).shape == (4, 3)


def test_an_instance_norm_refusal_names_the_norms_that_build() -> None:
    # Instance norm's groups are one channel's map; layer norm spans the channels and
    # builds the same model (the message said "'batch' or None").
    with pytest.raises(ValueError, match=r"must be 'batch', 'layer', 'group' or None"):
        cnn1d((1, 40), 3, depth=5, width=8, norm="instance")
    model = cnn1d((1, 40), 3, depth=5, width=8, norm="layer")
    assert model(inputs((1, 40))).shape == (4, 3)


@pytest.mark.parametrize(
    ("builder", "shape", "options"),
    [
        (mlp, (6,), {"width": 3, "norm": "layer"}),
        (mlp, (6,), {"width": 3, "norm": "group"}),
        (cnn2d, (1, 1, 1), {"depth": 1, "width": 3, "norm": "layer"}),
        (cnn1d, (1, 6), {"depth": 2, "norm": "instance"}),  # block 2 sees maps of 3 values
    ],
)
def test_a_normalization_of_three_values_builds_and_tells_samples_apart(builder, shape, options):
    model = builder(shape, 3, **options)
    values_per_group = []

    def count(layer, args, _):
        per_sample = args[0][0].numel()
        if isinstance(layer, nn.LayerNorm):
            values_per_group.append(math.prod(layer.normalized_shape))
        elif isinstance(layer, nn.GroupNorm):
            values_per_group.append(per_sample // layer.num_groups)
        else:  # instance normalization: one group per channel
            values_per_group.append(per_sample // args[0].shape[1])

    kinds = (nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d)
    for layer in model:
        if isinstance(layer, kinds):
            layer.register_forward_hook(count)
    scores = model(inputs(shape, batch=6))
    assert values_per_group
    assert min(values_per_group) == 3
    assert scores.std(dim=0).min() > 1e-4  # the samples do not all score alike


@pytest.mark.parametrize(
    ("builder", "shape", "options"),
    [
        (mlp, (1, 8, 8), {"depth": 2, "width": 16}),
        (mlp, (12,), {"width": [16, 8]}),
        (cnn1d, (3, 17), {"depth": 2, "width": 8, "kernel_size": 3, "num_groups": 4}),
        (cnn2d, (1, 8, 8), {"depth": 2, "width": 8, "kernel_size": 3}),
    ],
)
def test_numpy_ints_build_the_model_python_ints_build(builder, shape, options):
    # QA: mlp refused width=np.int64(16) ("must be an int >= 1 ... Got np.int64(16)"), the
    # CNNs refused a numpy kernel_size and every builder a numpy input_shape, while the
    # CNNs took a numpy width and mlp a numpy depth: a search that draws its options with
    # numpy could build some models and not others.
    def to_numpy(value):
        return [np.int64(v) for v in value] if isinstance(value, list) else np.int64(value)

    torch.manual_seed(0)
    reference = builder(shape, 10, **options)
    torch.manual_seed(0)
    model = builder(
        tuple(np.int64(size) for size in shape),
        np.int64(10),
        **{name: to_numpy(value) for name, value in options.items()},
    )
    assert repr(model) == repr(reference)
    for (name, mine), other in zip(
        model.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert torch.equal(mine, other), name
    for layer in model.modules():
        for attribute in ("in_features", "out_features", "in_channels", "out_channels"):
            assert type(getattr(layer, attribute, 0)) is int


def test_a_one_element_tensor_width_builds_layers_of_int_sizes():
    # The int constraints take a one-element tensor (as for the learning rate); the layers
    # got it as it was: Conv1d(1, tensor(8), ...).
    model = cnn1d((1, 16), 3, width=torch.tensor(8), num_groups=torch.tensor(2), norm="group")
    assert repr(model) == repr(cnn1d((1, 16), 3, width=8, num_groups=2, norm="group"))
    sizes = [model[0].out_channels, model[1].num_groups, model[-1].in_features]
    assert [type(size) for size in sizes] == [int, int, int]


@pytest.mark.parametrize(
    ("builder", "shape", "options", "layer", "fix"),
    [
        # 28 -> 14 -> 7 -> 3 -> 1: block 5's batch norm sees 1x1 maps.
        (cnn2d, (1, 28, 28), {"depth": 5}, "Layer 17 (BatchNorm2d)", "a depth <= 4"),
        (cnn2d, (3, 1, 1), {"depth": 1}, "Layer 1 (BatchNorm2d)", None),
        # 6 -> 3 -> 1: block 3's batch norm sees signals of length 1.
        (cnn1d, (1, 6), {"depth": 4}, "Layer 9 (BatchNorm1d)", "a depth <= 2"),
        (mlp, (12,), {"depth": 1, "width": 8, "norm": "batch"}, "Layer 2 (BatchNorm1d)", None),
    ],
)  # fmt: skip
def test_batch_norm_on_one_value_per_channel_names_the_layer_shape_and_fixes(
    builder, shape, options, layer, fix
):
    # QA: one sample through a deep cnn2d in training mode failed deep inside torch with
    # "Expected more than 1 value per channel when training", naming no layer and no fix.
    model = builder(shape, 10, **options)
    with pytest.raises(ValueError, match="needs more than 1 value per channel") as raised:
        model(inputs(shape, batch=1))
    message = str(raised.value)
    assert message.startswith(f"{layer} of this {builder.__name__} got input of shape (1, ")
    assert "in training mode" in message
    assert "batches of 2 samples or more" in message
    assert "model.eval()" in message
    assert "norm='layer', 'group' or None" in message
    assert (fix is not None and fix in message) or "depth" not in message
    assert isinstance(raised.value.__cause__, ValueError)  # torch's own error, kept
    assert model(inputs(shape, batch=2)).shape == (2, 10)  # each fix then works
    model.eval()
    assert model(inputs(shape, batch=1)).shape == (1, 10)


def test_other_errors_of_a_built_model_pass_through_unchanged():
    model = cnn2d((1, 8, 8), 10)
    with pytest.raises(RuntimeError) as raised:
        model(torch.zeros(2, 3, 8, 8))  # 3 channels into a 1-channel convolution
    assert "Layer" not in str(raised.value)
    assert repr(model).startswith("Sequential(\n  (0): Conv2d(1, 32")
    assert isinstance(model[:3], nn.Sequential)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_a_built_mlp_scripts_with_torchscript_and_computes_the_same() -> None:
    # BuiltModel's try/except forward does not compile in TorchScript; the builders'
    # plain nn.Sequential did. It scripts as that Sequential now. (The CNNs' HalvingMaxPool
    # never scripted: TorchScript takes no autograd.Function.)
    torch.manual_seed(0)
    model = build_model("mlp", (6,), 3, norm="batch").eval()
    scripted = torch.jit.script(model)
    inputs = torch.randn(4, 6)
    torch.testing.assert_close(scripted(inputs), model(inputs), rtol=0, atol=0)
    assert scripted.state_dict().keys() == model.state_dict().keys()
