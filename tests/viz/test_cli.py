"""``gradwise viz`` in-process, registered the way the CLI owner will wire it."""

import pytest
from PIL import Image

from gradwise.cli import main


def test_viz_writes_the_png_and_gif_and_prints_where(tmp_path, capsys):
    code = main(
        [
            "viz",
            "--surface",
            "quadratic",
            "--optimizers",
            "SGD,Adam",
            "--lr",
            "0.09,0.05",
            "--steps",
            "8",
            "--start=-2,1",
            "--out",
            str(tmp_path),
            "--gif",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    png, gif = tmp_path / "quadratic_trajectories.png", tmp_path / "quadratic_trajectories.gif"
    assert f"plot: {png}" in out
    assert f"animation: {gif}" in out
    assert "SGD (lr=0.09)" in out
    assert "Adam (lr=0.05)" in out
    with Image.open(png) as image:
        assert image.format == "PNG"
    with Image.open(gif) as image:
        assert image.n_frames > 1


def test_viz_defaults_to_the_current_folder_and_no_gif(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["viz", "--steps", "5"]) == 0
    assert "plot: rosenbrock_trajectories.png" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["rosenbrock_trajectories.png"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--optimizers", "SGD,Nope"],
            "gradwise viz: error: --optimizers must name gradwise.optim classes",
        ),
        (
            ["--lr", "0.1,0.2,0.3"],
            "gradwise viz: error: --lr must be one positive number, or one per optimizer (2). Got '0.1,0.2,0.3' instead.",
        ),
        (
            ["--start", "1"],
            "gradwise viz: error: --start must be two numbers X,Y. Got '1' instead.",
        ),
        (
            ["--start", "a,b"],
            "gradwise viz: error: --start must be comma-separated numbers. Got 'a,b' instead.",
        ),
        (["--steps", "0"], "gradwise viz: error: --steps must be an integer >= 1. Got 0 instead."),
    ],
)
def test_bad_options_print_one_line_and_exit_2(tmp_path, capsys, arguments, message):
    assert main(["viz", "--out", str(tmp_path), *arguments]) == 2
    error = capsys.readouterr().err
    assert error.startswith(message)
    assert error.count("\n") == 1
