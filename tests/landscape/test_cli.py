"""``gradwise landscape RUN`` on a real (tiny) trained run, through gradwise.cli.main."""

from __future__ import annotations

import base64
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gradwise import landscape
from gradwise.cli import main
from gradwise.config import load_config, parse_config, read_file
from gradwise.landscape import interpolate
from gradwise.losses import get_loss
from gradwise.runs import RunFolder
from gradwise.train import load_checkpoint, prepare_run, train


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    overrides = [f"runs_dir={root}", "name=tiny", "epochs=3", "data.dataset=spirals",
                 "model.name=mlp", "model.width=8", "model.depth=1", "optimizer.lr=0.05"]  # fmt: skip
    result = train(load_config(None, overrides), progress=False)
    assert result.run is not None
    return result.run.path


def test_writes_every_kind_of_picture_and_prints_the_paths(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["landscape", str(run), "--resolution", "5", "--subset", "64"])
    assert code == 0
    printed = capsys.readouterr().out.split()
    names = ["landscape-interpolate.png", "landscape-1d.png", "landscape-2d-contour.png",
             "landscape-2d-surface.png"]  # fmt: skip
    assert printed == [str(run / name) for name in names] + [str(run / "report.html")]
    for name in names:
        assert (run / name).read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("rebuilt_by", ["landscape", "report"])
def test_the_runs_report_embeds_the_pictures(
    run: Path, capsys: pytest.CaptureFixture[str], rebuilt_by: str
) -> None:
    # The run's report.html left the landscape pictures out, however often it was rebuilt,
    # and gradwise landscape did not rebuild it.
    (run / "report.html").unlink()
    assert main(["landscape", str(run), "--resolution", "3", "--subset", "32"]) == 0
    capsys.readouterr()
    if rebuilt_by == "report":
        assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "<h2>Loss landscape</h2>" in page
    section = page.split("<h2>Loss landscape</h2>")[1].split("</section>")[0]
    embedded = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', section)
    names = ["landscape-interpolate.png", "landscape-1d.png", "landscape-2d-contour.png",
             "landscape-2d-surface.png"]  # fmt: skip
    assert [base64.b64decode(data) for data in embedded] == [
        (run / name).read_bytes() for name in names
    ]


def test_one_kind(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for path in run.glob("landscape-*.png"):
        path.unlink()
    assert main(["landscape", str(run), "--kind", "1d", "--resolution", "3"]) == 0
    assert capsys.readouterr().out.split() == [
        str(run / "landscape-1d.png"),
        str(run / "report.html"),
    ]
    assert [path.name for path in run.glob("landscape-*.png")] == ["landscape-1d.png"]


def test_the_interpolation_runs_from_the_configs_init_to_the_last_checkpoint(run: Path) -> None:
    # The oracle: the model rebuilt from config.yaml (its init) and the checkpoint's model
    # loaded by hand; the interpolation's endpoints are the losses at exactly those weights.
    folder = RunFolder.open(run)
    config = parse_config(read_file(folder.config_path))
    init_model = prepare_run(config).model.eval()
    final_model = prepare_run(config).model
    final_model.load_state_dict(load_checkpoint(folder.last_checkpoint)["model"])
    final_model.eval()
    data = prepare_run(config).data.train
    loss = get_loss(config.loss)
    with torch.no_grad():
        at_init = loss(init_model(data.inputs), data.targets).item()
        at_final = loss(final_model(data.inputs), data.targets).item()
    assert at_final < at_init  # it trained: the two ends differ
    line = interpolate(final_model, init_model, final_model, loss, data, num_points=3, extend=0.0)
    np.testing.assert_allclose(line.losses, [at_init, line.losses[1], at_final], rtol=1e-5)


def test_errors_are_one_line(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["landscape", str(tmp_path / "missing")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    untrained = RunFolder.create(tmp_path, "untrained", min_free_bytes=0)
    (untrained.path / "config.yaml").write_text((run / "config.yaml").read_text())
    assert main(["landscape", str(untrained.path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("gradwise landscape: error: ")
    assert "no final weights" in error
    assert len(error.splitlines()) == 1
    assert main(["landscape", str(run), "--resolution", "1"]) == 2
    assert "--resolution must be an int >= 2. Got 1 instead." in capsys.readouterr().err
    # torch's generator takes seeds below 2**64; a float32 model's grid ends below 3.4e38.
    assert main(["landscape", str(run), "--seed", str(2**64)]) == 2
    assert "--seed must be an int in [0, 2**64 - 1]." in capsys.readouterr().err
    assert main(["landscape", str(run), "--kind", "1d", "--span", "1e39"]) == 2
    error = capsys.readouterr().err.strip()
    assert "--span must be at most 3.403e+38" in error
    assert len(error.splitlines()) == 1


def test_the_cli_interpolation_starts_at_the_init_models_loss(
    run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The run's MLP has batch norm (the config's default norm): the line must start from the
    # init's running statistics too, not the final ones with the init's weights.
    lines = []

    def recording(*args: object, **kwargs: object) -> object:
        line = interpolate(*args, **kwargs)  # type: ignore[arg-type]
        lines.append(line)
        return line

    monkeypatch.setattr(landscape, "interpolate", recording)
    folder = RunFolder.open(run)
    config = parse_config(read_file(folder.config_path))
    init_model = prepare_run(config).model.eval()
    assert any(isinstance(module, torch.nn.BatchNorm1d) for module in init_model.modules())
    data = prepare_run(config).data.train
    with torch.no_grad():
        at_init = get_loss(config.loss)(init_model(data.inputs), data.targets).item()
    subset = ["--subset", str(len(data)), "--resolution", "3"]
    assert main(["landscape", str(run), "--kind", "interpolate", *subset]) == 0
    (line,) = lines
    np.testing.assert_allclose(line.losses[line.coordinates == 0.0], [at_init], rtol=1e-5)


def test_a_run_folder_that_cannot_be_written_is_refused_before_any_plot_is_computed(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # QA: every plot was computed, then writing the first one was a PermissionError
    # traceback. Root writes through chmod, so the folder is made read-only the way a
    # user without write permission sees it: os.access says no.
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("landscape-*.png"))
    real_access = os.access

    def access(path: object, mode: int, *args: object, **kwargs: object) -> bool:
        if Path(str(path)).resolve() == copy.resolve() and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)  # type: ignore[arg-type]

    computed = []
    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(landscape, "slice_1d", lambda *a, **k: computed.append(a))
    assert main(["landscape", str(copy), "--kind", "1d", "--resolution", "3"]) == 2
    printed = capsys.readouterr()
    assert printed.err.strip() == (
        f"gradwise landscape: error: The 'RUN' argument of gradwise landscape must be a "
        f"folder that can be written. Got {str(copy)!r} instead: permission denied. Make it "
        "writable: the plots and report.html are written into it."
    )
    assert printed.out == ""
    assert computed == []
    assert not list(copy.glob("landscape-*.png"))


def test_a_plot_that_cannot_be_written_is_a_one_line_error(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The folder can be written, the plot's path cannot: a folder holds its name.
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("landscape-*.png"))
    (copy / "landscape-1d.png").mkdir()
    assert main(["landscape", str(copy), "--kind", "1d", "--resolution", "3"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        "gradwise landscape: error: Could not write the landscape plot "
        f"{copy / 'landscape-1d.png'}: Is a directory."
    )
