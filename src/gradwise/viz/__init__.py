"""Optimizer trajectories on 2-D test surfaces, and the ill-conditioned-quadratic lesson.

:func:`get_surface` returns a test surface (:data:`SURFACE_NAMES`) with its formula,
domain and known critical points as data; :func:`run_optimizers` runs any gradwise
optimizer or chain on it from a start point, with a divergence guard;
:func:`plot_trajectories` and :func:`animate_trajectories` draw the runs over the contour
lines (PNG, animated GIF; matplotlib is imported only when drawing).
:func:`quadratic_lesson` shows why gradient descent on ``1/2 x^T A x`` converges below
``lr = 2 / lambda_max`` and diverges above it.
"""

from gradwise.viz._lesson import QuadraticLesson, quadratic_lesson
from gradwise.viz._plots import animate_trajectories, plot_trajectories
from gradwise.viz._surfaces import SURFACE_NAMES, SURFACES, CriticalPoint, Surface, get_surface
from gradwise.viz._trajectory import OptimizerSpec, Trajectory, run_optimizers

__all__ = [
    "SURFACES",
    "SURFACE_NAMES",
    "CriticalPoint",
    "OptimizerSpec",
    "QuadraticLesson",
    "Surface",
    "Trajectory",
    "animate_trajectories",
    "get_surface",
    "plot_trajectories",
    "quadratic_lesson",
    "run_optimizers",
]
