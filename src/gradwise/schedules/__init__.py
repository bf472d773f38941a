"""Learning-rate (and other hyperparameter) schedules: pure functions of the step.

A schedule maps a step ``k = 0, 1, 2, ...`` to a value; its value at step 0 is its initial
value. Given an int or a float it returns a float; given a tensor of steps it returns a
float64 tensor of values, element by element, and a 0-d tensor step traces under
``torch.compile(fullgraph=True)``. Schedules plug into
:func:`gradwise.optim.scale_by_learning_rate`, and :class:`ScheduleLR` drives any
``torch.optim`` optimizer with them. :class:`ReduceOnPlateau` is the one stateful
schedule: its value follows a metric reported with ``observe``.
"""

from gradwise.schedules._check import (
    Schedule,
    TwoSchedulesError,
    check_schedule,
    first_invalid_value,
)
from gradwise.schedules._compose import constant_warmup, join, linear_warmup
from gradwise.schedules._cyclic import cosine_warm_restarts, one_cycle
from gradwise.schedules._decay import (
    constant,
    cosine_decay,
    exponential_decay,
    inverse_time_decay,
    linear_decay,
    multistep_decay,
    polynomial_decay,
    step_decay,
)
from gradwise.schedules._lr_scheduler import ScheduleLR, stateful_parts
from gradwise.schedules._plateau import ReduceOnPlateau

__all__ = [
    "ReduceOnPlateau",
    "Schedule",
    "ScheduleLR",
    "TwoSchedulesError",
    "check_schedule",
    "constant",
    "constant_warmup",
    "cosine_decay",
    "cosine_warm_restarts",
    "exponential_decay",
    "first_invalid_value",
    "inverse_time_decay",
    "join",
    "linear_decay",
    "linear_warmup",
    "multistep_decay",
    "one_cycle",
    "polynomial_decay",
    "stateful_parts",
    "step_decay",
]
