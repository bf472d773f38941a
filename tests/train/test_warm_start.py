"""Warm starts and fine-tuning: loading by name and shape, freezing, layer groups, resume."""

from __future__ import annotations

import copy
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from gradwise import schedules
from gradwise.config import ConfigError, RunConfig, config_to_dict, load_config
from gradwise.models import cnn2d, mlp
from gradwise.runs import RunFolder, read_summary, write_config
from gradwise.train import (
    Callback,
    TrainState,
    freeze,
    load_checkpoint,
    make_trainer,
    prepare_run,
    resume,
    save_checkpoint,
    train,
    warm_start,
)
from tests.train.conftest import SMALL_RUN
from tests.train.stop_at import StopAt

# -- warm_start: what is loaded, skipped and newly initialized ----------------------------


def test_matching_entries_load_and_a_new_read_out_keeps_its_initialization() -> None:
    torch.manual_seed(0)
    source = cnn2d((1, 28, 28), 10)  # mnist5k-sized: read-out Linear(32 * 7 * 7, 10)
    model = cnn2d((1, 8, 8), 10)  # digits-sized: read-out Linear(32 * 2 * 2, 10)
    fresh = copy.deepcopy(model.state_dict())
    report = warm_start(model, source.state_dict())

    expected = [name for name in fresh if not name.startswith("9.")]
    assert list(report.loaded) == expected
    for name in expected:  # conv kernels and batch-norm statistics do not depend on image size
        assert torch.equal(model.state_dict()[name], source.state_dict()[name]), name
    # The read-out changed shape: its weight AND its bias (same shape, (10,)) keep the
    # model's own initialization, so the layer is not half pre-trained.
    assert report.initialized == ("9.weight", "9.bias")
    assert torch.equal(model[9].weight, fresh["9.weight"])
    assert torch.equal(model[9].bias, fresh["9.bias"])
    reasons = {entry.name: entry.reason for entry in report.skipped}
    assert reasons == {"9.weight": "shape mismatch", "9.bias": "layer mismatch"}
    assert report.loaded_values == sum(fresh[name].numel() for name in expected)
    assert report.initialized_values == 10 * 128 + 10
    table = str(report)
    assert "9.weight: shape mismatch, source (10, 1568), model (10, 128)" in table
    assert "newly initialized" in table


def test_entries_missing_on_either_side_are_reported() -> None:
    source = mlp((4,), 3, depth=1, width=8)
    model = mlp((4,), 3, depth=2, width=8)  # one more hidden layer: '3.*' is new, read-out moved
    report = warm_start(model, source.state_dict())
    assert report.loaded == ("1.weight", "1.bias")
    reasons = {entry.name: entry.reason for entry in report.skipped}
    assert reasons["3.weight"] == "shape mismatch"  # source's read-out (3, 8) vs hidden (8, 8)
    assert reasons["5.weight"] == "missing in source"
    assert set(report.initialized) == {"3.weight", "3.bias", "5.weight", "5.bias"}
    source_only = mlp((4,), 3, depth=2, width=8)
    report = warm_start(mlp((4,), 3, depth=1, width=8), source_only.state_dict())
    assert {e.name for e in report.skipped if e.reason == "not in the model"} == {
        "5.weight",
        "5.bias",
    }


def test_nothing_matching_is_an_error_showing_both_models_names() -> None:
    source = torch.nn.Sequential(torch.nn.Linear(4, 8))  # names '0.weight', '0.bias'
    with pytest.raises(ValueError, match="no name matches") as error:
        warm_start(torch.nn.Linear(4, 8), source.state_dict())  # names 'weight', 'bias'
    assert "'0.weight'" in str(error.value)
    assert "the model's look like 'weight', 'bias'" in str(error.value)
    with pytest.raises(ValueError, match=r"'0.weight': source \(32, 1, 3, 3\), model \(16"):
        warm_start(cnn2d((1, 8, 8), 10, width=16), cnn2d((1, 8, 8), 10).state_dict())


def test_strict_refuses_any_entry_that_does_not_match() -> None:
    source = cnn2d((1, 28, 28), 10).state_dict()
    model = cnn2d((1, 8, 8), 10)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"strict=True.*2 do not: 9.weight: shape mismatch"):
        warm_start(model, source, strict=True)
    for name, tensor in before.items():  # nothing was copied
        assert torch.equal(model.state_dict()[name], tensor)
    report = warm_start(cnn2d((1, 8, 8), 10), cnn2d((1, 8, 8), 10).state_dict(), strict=True)
    assert report.skipped == ()


# -- sources: run folders, checkpoint files, state-dict files -----------------------------


# Without dropout the MLP's layers are 1, 3 and 5: Flatten, Linear, ReLU, Linear, ReLU, Linear.
NO_DROPOUT = "model.dropout=0.0"


def _fit(config: RunConfig) -> RunFolder:
    """A run folder as ``train`` writes it, without the HTML report (seconds per test)."""
    assert config.name is not None
    folder = RunFolder.create(config.runs_dir, config.name)
    write_config(folder, config_to_dict(config))
    make_trainer(prepare_run(config), folder, progress=False).fit()
    return folder


@pytest.fixture(scope="module")
def source_run(tmp_path_factory: pytest.TempPathFactory) -> RunFolder:
    """A spirals MLP run (3 classes) that the tests warm-start from; copy it to change it."""
    root = tmp_path_factory.mktemp("sources")
    return _fit(load_config(overrides=[*SMALL_RUN, NO_DROPOUT, f"runs_dir={root}", "name=src"]))


def _copy(run: RunFolder, destination: Path) -> RunFolder:
    shutil.copytree(run.path, destination)
    return RunFolder.open(destination)


def test_sources_run_folder_last_and_best_checkpoint_files_and_state_dicts(
    tmp_path: Path, source_run: RunFolder
) -> None:
    run = _copy(source_run, tmp_path / "source")
    last = load_checkpoint(run.last_checkpoint)["model"]
    best = load_checkpoint(run.best_checkpoint)["model"]
    # Make best.pt differ from last.pt so the test can tell which one was read.
    best = {
        name: tensor + 1.0 if tensor.is_floating_point() else tensor
        for name, tensor in best.items()
    }
    contents = load_checkpoint(run.best_checkpoint)
    save_checkpoint(
        run.best_checkpoint, {**{k: v for k, v in contents.items() if k != "format"}, "model": best}
    )
    torch.save(last, tmp_path / "weights.pt")
    cases = [
        (run.path, "last", last, run.last_checkpoint),
        (str(run.path), "best", best, run.best_checkpoint),
        (run.last_checkpoint, "last", last, run.last_checkpoint),  # a gradwise checkpoint file
        (tmp_path / "weights.pt", "last", last, tmp_path / "weights.pt"),  # torch.save'd dict
    ]
    for source, checkpoint, expected, where in cases:
        model = mlp((2,), 3, depth=2, width=32)
        report = warm_start(model, source, checkpoint=checkpoint)
        assert report.source == str(where)
        assert report.initialized == ()
        for name, tensor in expected.items():
            assert torch.equal(model.state_dict()[name], tensor), (source, name)


def test_missing_or_unusable_sources_are_clear_errors(
    tmp_path: Path, source_run: RunFolder
) -> None:
    model = mlp((2,), 3, depth=2, width=32)
    with pytest.raises(ValueError, match=r"'source' parameter of warm_start .* does not exist"):
        warm_start(model, tmp_path / "gone")
    empty = RunFolder.create(tmp_path, "empty")
    with pytest.raises(
        ValueError, match=r"no checkpoints/last.pt in .*empty: it has no checkpoint"
    ):
        warm_start(model, empty.path)
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="not a gradwise run folder"):
        warm_start(model, tmp_path / "plain")
    run = _copy(source_run, tmp_path / "one")
    run.best_checkpoint.unlink()
    with pytest.raises(ValueError, match=r"no checkpoints/best.pt .*it has last.pt"):
        warm_start(model, run.path, checkpoint="best")
    with pytest.raises(ValueError, match="'checkpoint' parameter of warm_start picks a file"):
        warm_start(model, run.last_checkpoint, checkpoint="best")
    with pytest.raises(ValueError, match="'checkpoint' parameter of warm_start must be one of"):
        warm_start(model, run.path, checkpoint="final")
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="could not read .*notes.pt as a checkpoint"):
        warm_start(model, tmp_path / "notes.pt")
    torch.save({"epoch": 3}, tmp_path / "meta.pt")
    with pytest.raises(ValueError, match=r"no model weights in .*meta.pt.*\['epoch'\]"):
        warm_start(model, tmp_path / "meta.pt")
    with pytest.raises(TypeError, match="'source' parameter of warm_start"):
        warm_start(model, 3)  # type: ignore[arg-type]


# -- freeze --------------------------------------------------------------------------------


def test_freeze_stops_exactly_the_matched_parameters() -> None:
    model = cnn2d((1, 8, 8), 10)
    frozen = freeze(model, ["0.*", "4.weight"])
    assert frozen == ["0.weight", "0.bias", "4.weight"]
    for name, parameter in model.named_parameters():
        assert parameter.requires_grad == (name not in frozen), name
    assert freeze(mlp((4,), 2), "*.bias") == ["1.bias", "3.bias", "5.bias"]  # one glob


def test_freeze_refuses_a_pattern_that_matches_nothing_listing_the_names() -> None:
    model = mlp((4,), 2, depth=1, width=8)
    with pytest.raises(
        ValueError, match=r"'1.weight', '1.bias', '3.weight', '3.bias'\). Got '9.\*'"
    ):
        freeze(model, ["1.*", "9.*"])
    assert all(p.requires_grad for p in model.parameters())  # nothing frozen on error
    with pytest.raises(ValueError, match="'patterns' parameter of freeze must be a glob pattern"):
        freeze(model, [])


def test_frozen_batch_norm_statistics_update_unless_kept_fixed() -> None:
    torch.manual_seed(0)
    inputs = torch.randn(16, 1, 8, 8) * 3 + 1
    model = cnn2d((1, 8, 8), 10)
    freeze(model, ["0.*", "1.*"])
    model.train()
    model(inputs)
    assert not torch.equal(model[1].running_mean, torch.zeros(32))  # still updated

    model = cnn2d((1, 8, 8), 10)
    model[1].running_mean.fill_(0.5)
    reference = copy.deepcopy(model)
    freeze(model, ["0.*", "1.*"], freeze_statistics=True)
    model.train()
    outputs = model(inputs)
    assert torch.equal(model[1].running_mean, torch.full((32,), 0.5))  # kept fixed
    assert not torch.equal(model[5].running_mean, torch.zeros(32))  # not frozen: updated
    # The oracle: layer 1 in eval mode, the rest in training mode.
    reference.train()
    reference[1].eval()
    torch.testing.assert_close(outputs, reference(inputs), rtol=0, atol=0)


# -- the config: warm_start section, frozen parameters, layer groups -----------------------


def _config(tmp_path: Path, *extra: str) -> RunConfig:
    return load_config(overrides=[*SMALL_RUN, NO_DROPOUT, f"runs_dir={tmp_path}", *extra])


def test_a_configured_warm_start_loads_freezes_and_keeps_frozen_layers_out(
    tmp_path: Path, source_run: RunFolder
) -> None:
    run = source_run
    source = load_checkpoint(run.last_checkpoint)["model"]
    config = _config(
        tmp_path,
        "name=tuned",
        "data.dataset=circles",  # 2 classes: the read-out is new
        f"warm_start={{source: {run.path}, freeze: ['1.*']}}",
    )
    prepared = prepare_run(config)
    model = prepared.model
    for name in ("1.weight", "1.bias", "3.weight", "3.bias"):
        assert torch.equal(model.state_dict()[name], source[name]), name
    optimized = {id(p) for group in prepared.optimizer.param_groups for p in group["params"]}
    assert id(model[1].weight) not in optimized
    assert id(model[1].bias) not in optimized
    assert id(model[3].weight) in optimized
    tuned = _fit(config)
    final = load_checkpoint(tuned.last_checkpoint)["model"]
    assert torch.equal(final["1.weight"], source["1.weight"])  # frozen: unchanged
    assert not torch.equal(final["3.weight"], source["3.weight"])  # fine-tuned
    record = read_summary(tuned)["warm_start"]
    assert record["source"] == str(run.last_checkpoint)
    assert record["initialized"] == ["5.weight", "5.bias"]
    assert record["frozen"] == ["1.weight", "1.bias"]


def test_warm_start_config_errors_say_where(tmp_path: Path, source_run: RunFolder) -> None:
    with pytest.raises(ConfigError, match=r"in 'train.warm_start': .*does not exist"):
        prepare_run(_config(tmp_path, f"warm_start={{source: {tmp_path / 'gone'}}}"))
    with pytest.raises(ConfigError, match="'train.warm_start' needs a 'source'"):
        prepare_run(_config(tmp_path, "warm_start={freeze: ['1.*']}"))
    with pytest.raises(ConfigError, match="The 'checkpoint' key in 'train.warm_start' must be"):
        _config(tmp_path, "warm_start={source: x, checkpoint: final}")
    run = source_run
    with pytest.raises(ConfigError, match=r"in 'train.warm_start.freeze': .*Got '9.\*'"):
        prepare_run(_config(tmp_path, f"warm_start={{source: {run.path}, freeze: ['9.*']}}"))
    everything = f"warm_start={{source: {run.path}, freeze: ['*']}}"
    with pytest.raises(ConfigError, match="no parameter to train: every parameter .* is frozen"):
        prepare_run(_config(tmp_path, everything))


def test_layer_groups_get_their_own_hyperparameters_and_schedules(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        "optimizer={name: AdamW, lr: 0.01, weight_decay: 0.05, "
        "groups: [{params: ['1.*', '3.weight'], lr: 0.001, weight_decay: 0.0}]}",
        "schedule={name: cosine, warmup: 0.1}",
    )
    prepared = prepare_run(config)
    default, pretrained = prepared.optimizer.param_groups
    model = prepared.model
    assert [id(p) for p in pretrained["params"]] == [
        id(model[1].weight),
        id(model[1].bias),
        id(model[3].weight),
    ]
    assert [id(p) for p in default["params"]] == [
        id(model[3].bias),
        id(model[5].weight),
        id(model[5].bias),
    ]
    assert (pretrained["weight_decay"], default["weight_decay"]) == (0.0, 0.05)
    # One schedule per group from its own lr: the oracle is the schedule function itself.
    steps = prepared.total_steps
    expected = [
        schedules.linear_warmup(
            schedules.cosine_decay(lr, num_steps=steps - round(0.1 * steps)),
            num_steps=round(0.1 * steps),
        )
        for lr in (0.01, 0.001)
    ]
    assert prepared.scheduler is not None
    for step in range(1, 12):
        prepared.optimizer.step()
        prepared.scheduler.step()
        for group, schedule in zip(prepared.optimizer.param_groups, expected, strict=True):
            assert group["lr"] == pytest.approx(float(schedule(step)), rel=1e-12), step


def test_a_chain_takes_groups_with_their_own_lr(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        "optimizer={lr: 0.01, chain: [scale_by_adam, scale_by_learning_rate], "
        "groups: [{params: ['5.*'], lr: 0.1}]}",
        "schedule=null",
    )
    prepared = prepare_run(config)
    assert [group["lr"] for group in prepared.optimizer.param_groups] == [0.01, 0.1]
    # Each group steps with its own lr: Adam's first update is -lr g / (|g| + eps).
    model = prepared.model
    read_out, hidden = model[5].weight, model[1].weight
    before = [read_out.detach().clone(), hidden.detach().clone()]
    model(torch.randn(8, 2)).logsumexp(dim=1).sum().backward()
    grads = [read_out.grad.clone(), hidden.grad.clone()]  # type: ignore[union-attr]
    prepared.optimizer.step()
    for parameter, start, grad, lr in zip(
        (read_out, hidden), before, grads, (0.1, 0.01), strict=True
    ):
        expected = start - lr * grad / (grad.abs() + 1e-8)
        torch.testing.assert_close(parameter.detach(), expected)


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        (
            "[{params: ['1.*'], lr: 0.001}, {params: ['1.weight', '3.*'], lr: 0.002}]",
            r"parameter '1.weight' is in both 'train.optimizer.groups\[0\]' and "
            r"'train.optimizer.groups\[1\]'",
        ),
        (
            "[{params: ['7.*'], lr: 0.001}]",
            r"'7.\*' in 'train.optimizer.groups\[0\].params' matches no parameter of the "
            r"model; its trainable parameters are '1.weight', '1.bias'",
        ),
        (
            "[{params: ['1.*'], learning_rate: 0.001}]",
            r"unknown key 'learning_rate' in 'train.optimizer.groups\[0\]'",
        ),
        (
            "[{params: ['1.*'], lr: -1}]",
            r"in 'train.optimizer.groups\[0\]': The 'lr' parameter of AdamW must be",
        ),
        ("[{lr: 0.001}]", r"'train.optimizer.groups\[0\]' must be a mapping with 'params'"),
        ("{params: ['1.*']}", r"'train.optimizer.groups' must be a non-empty list"),
    ],
)
def test_bad_groups_are_config_errors(tmp_path: Path, groups: str, message: str) -> None:
    config = _config(tmp_path, f"optimizer.groups={groups}")
    with pytest.raises(ConfigError, match=message):
        prepare_run(config)


def test_group_errors_of_chains_and_of_frozen_parameters(
    tmp_path: Path, source_run: RunFolder
) -> None:
    chain = "optimizer={lr: 0.01, chain: [scale_by_adam, scale_by_learning_rate], "
    with pytest.raises(
        ConfigError, match=r"unknown key 'weight_decay' in 'train.optimizer.groups\[0\]'"
    ):
        prepare_run(_config(tmp_path, chain + "groups: [{params: ['1.*'], weight_decay: 0.1}]}"))
    run = source_run
    config = _config(
        tmp_path,
        f"warm_start={{source: {run.path}, freeze: ['1.*']}}",
        "optimizer.groups=[{params: ['1.*'], lr: 0.001}]",
    )
    with pytest.raises(ConfigError, match=r"'1.\*' .* matches only frozen parameters"):
        prepare_run(config)


# -- resume ----------------------------------------------------------------------------------


def test_a_warm_started_run_resumes_exactly_without_its_source(
    tmp_path: Path, source_run: RunFolder
) -> None:
    source = _copy(source_run, tmp_path / "source")
    options = (
        "data.dataset=moons",
        f"warm_start={{source: {source.path}, freeze: ['1.*']}}",
        "optimizer.groups=[{params: ['3.*'], lr: 0.001}]",
    )
    whole = _fit(_config(tmp_path, "name=whole", *options))

    config = _config(tmp_path, "name=split", *options)
    folder = RunFolder.create(config.runs_dir, "split")
    write_config(folder, config_to_dict(config))
    trainer = make_trainer(prepare_run(config), folder, progress=False, callbacks=[StopAt(20)])
    assert trainer.fit().status == "stopped"
    assert read_summary(folder)["warm_start"]["frozen"] == ["1.weight", "1.bias"]
    shutil.rmtree(source.path)  # the checkpoint wins over the source, which may be gone
    resumed = resume(folder.path, progress=False)
    assert resumed.status == "completed"
    final = load_checkpoint(folder.last_checkpoint)["model"]
    reference = load_checkpoint(whole.last_checkpoint)["model"]
    for name, tensor in reference.items():
        assert torch.equal(tensor, final[name]), name
    assert read_summary(folder)["warm_start"] == read_summary(whole)["warm_start"]
    with pytest.raises(ConfigError, match="does not exist"):  # a fresh start does need it
        train(replace(config, name="again"), progress=False)


# -- the lectures' claim: fine-tuning from a similar task needs fewer steps -----------------


class _StepsToTarget(Callback):
    """Stops at the first multiple of ``every`` steps with validation accuracy >= target."""

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, target: float) -> None:
        self.inputs, self.labels, self.target = inputs, labels, target
        self.reached: int | None = None

    def on_step_end(self, state: TrainState) -> None:
        if state.step % 5:
            return
        state.model.eval()
        with torch.no_grad():
            predictions = state.model(self.inputs).argmax(dim=1)
        state.model.train()
        if (predictions == self.labels).float().mean().item() >= self.target:
            self.reached = state.step
            state.request_stop("target reached")


def _steps_to_target(config: RunConfig, target: float) -> int:
    prepared = prepare_run(config)
    validation = prepared.data.validation
    assert validation is not None
    callback = _StepsToTarget(validation.inputs, validation.targets, target)
    make_trainer(prepared, None, progress=False, callbacks=[callback]).fit()
    assert callback.reached is not None, "the budget was too small to reach the target"
    return callback.reached


def test_fine_tuning_from_another_dataset_reaches_the_target_in_fewer_steps(
    tmp_path: Path,
) -> None:
    # Spirals (3 classes) -> moons (2 classes): both 2-D point sets with curved class
    # boundaries; the hidden layers carry over, the read-out is new. The control starts
    # from the source weights with every tensor's entries shuffled (same scale, nothing
    # learnt), which separates learnt features from the weights' scale.
    # (benchmarks/fine_tuning.py: mnist5k -> digits with cnn2d shows no gain; see train.md.)
    common = [
        "model.name=mlp", "model.width=64", "model.depth=2", "model.norm=none",
        "data.batch_size=16", "optimizer.lr=0.003", "schedule=null", "monitor=null",
        "log_every=1000", f"runs_dir={tmp_path}",
    ]  # fmt: skip
    source = _fit(load_config(overrides=[*common, "data.dataset=spirals", "epochs=20", "name=s"]))
    weights = load_checkpoint(source.last_checkpoint)["model"]
    generator = torch.Generator().manual_seed(0)
    shuffled = {
        name: tensor.flatten()[torch.randperm(tensor.numel(), generator=generator)].view_as(tensor)
        for name, tensor in weights.items()
    }
    torch.save(shuffled, tmp_path / "shuffled.pt")
    steps: dict[str, list[int]] = {"scratch": [], "fine-tuned": [], "shuffled": []}
    for seed in (0, 1):
        target = [*common, "data.dataset=moons", "steps=300", f"seed={seed}"]
        for arm, start in (
            ("scratch", []),
            ("fine-tuned", [f"warm_start={{source: '{source.path}'}}"]),
            ("shuffled", [f"warm_start={{source: '{tmp_path / 'shuffled.pt'}'}}"]),
        ):
            steps[arm].append(_steps_to_target(load_config(overrides=[*target, *start]), 0.9))
    mean = {arm: sum(values) / len(values) for arm, values in steps.items()}
    print(f"\nsteps to 90% validation accuracy on moons, seeds 0 and 1: {steps}")
    print(
        f"scratch / fine-tuned = {mean['scratch'] / mean['fine-tuned']:.1f}x, "
        f"shuffled control / fine-tuned = {mean['shuffled'] / mean['fine-tuned']:.1f}x"
    )
    for scratch, tuned in zip(steps["scratch"], steps["fine-tuned"], strict=True):
        assert tuned < scratch
    assert mean["fine-tuned"] < mean["shuffled"]


def test_the_linear_scaling_rule_scales_every_group(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        "optimizer.groups=[{params: ['1.*'], lr: 0.001}]",
        "distributed.reference_batch_size=4",  # batch 16: lr x 4
        "schedule=null",
    )
    groups = prepare_run(config).optimizer.param_groups
    assert [group["lr"] for group in groups] == pytest.approx([0.04, 0.004], rel=1e-12)
