"""Coarse-to-fine: stages of random trials, each stage's ranges tightened around the best.

A trial's slot is its place among the study's trials that are not retries: slot ``i``
belongs to the first stage whose cumulative trial count exceeds ``i``. Every worker
derives the same stages and ranges from the storage alone, so several workers (on
several machines) agree on them without talking to each other. Stage ``s`` starts only
when every trial of stage ``s - 1`` has finished; its ranges come from the best ``keep``
completed trials of stage ``s - 1``:

- a numeric parameter gets ``[min, max]`` of the kept values, widened on each side by
  ``margin`` times the previous stage's range (in log space for log parameters), clipped
  to the previous stage's range (so to the declared bounds);
- a categorical or grid parameter keeps the values the kept trials used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from gradwise.search._space import Parameter, SearchSpec, Stage, _choice_identity

# Trial user attributes shared by the worker, the stage driver and the report.
STAGE_ATTR = "stage"
EPOCHS_ATTR = "epochs"
RUN_ATTR = "run"
FAIL_REASON_ATTR = "fail_reason"
# Set by optuna's RetryHeartbeatStaleTrialCallback on each retry: the chain's first trial,
# and the numbers of the attempts before this one.
_RETRY_ATTR = "failed_trial"
_RETRY_HISTORY_ATTR = "retry_history"

#: Retries of an interrupted or killed trial at most (so MAX_RETRIES + 1 attempts).
MAX_RETRIES = 3


@dataclass(frozen=True)
class StageRanges:
    """What one coarse-to-fine stage sampled from.

    Attributes:
        index: the stage, from 0.
        stage: its epochs, trials and keep count.
        parameters: the ranges (and choices) its trials were drawn from.
        kept: the trial numbers of the previous stage these ranges were tightened around
            (empty for the first stage).
    """

    index: int
    stage: Stage
    parameters: tuple[Parameter, ...]
    kept: tuple[int, ...] = ()


def is_retry(trial: FrozenTrial) -> bool:
    """A copy of a killed or interrupted trial, made to finish its work."""
    return _RETRY_ATTR in trial.system_attrs


def original_number(trial: FrozenTrial) -> int:
    """The number of the first trial of a retry chain (the trial itself if no retry)."""
    return int(trial.system_attrs.get(_RETRY_ATTR, trial.number))


def is_last_attempt(trial: FrozenTrial) -> bool:
    """A retry with no retry left: if it is stopped too, it is not queued again."""
    return len(trial.system_attrs.get(_RETRY_HISTORY_ATTR, ())) >= MAX_RETRIES


def failed_for_good(trial: FrozenTrial) -> bool:
    """Failed, and nothing will retry it: it failed for a reason of its own (recorded in
    ``fail_reason``) or it was the last attempt of a trial stopped on every attempt.

    (A last attempt records its reason when it starts, since a killed worker cannot write
    one at the end; a study from before that, or a worker killed right as the attempt
    started, leaves it without one, and it is still failed for good.)
    """
    if trial.state != TrialState.FAIL:
        return False
    return FAIL_REASON_ATTR in trial.user_attrs or is_last_attempt(trial)


def is_interrupted_attempt(trial: FrozenTrial) -> bool:
    """An attempt stopped by a Ctrl-C or a killed worker, which a retry continues (or, on
    resume, will): failed without a reason of its own, with retries left. The one
    definition of the leaderboard's and the report's ``interrupted`` and the search's
    interrupted trials (:class:`~gradwise.search._study.Progress`)."""
    return trial.state == TrialState.FAIL and not failed_for_good(trial)


def slot_of(trials: Sequence[FrozenTrial], number: int) -> int:
    """The slot of a new (non-retry) trial: how many non-retry trials came before it."""
    return sum(1 for trial in trials if trial.number < number and not is_retry(trial))


def stage_of_slot(stages: Sequence[Stage], slot: int) -> int:
    """The stage a slot belongs to (the last stage for slots past the budget)."""
    total = 0
    for index, stage in enumerate(stages):
        total += stage.trials
        if slot < total:
            return index
    return len(stages) - 1


def stage_of(stages: Sequence[Stage], trials: Sequence[FrozenTrial], trial: FrozenTrial) -> int:
    """The stage of a trial: the one its worker recorded, else its slot's (a retry's is its
    first attempt's: the retry's own number comes after later stages' trials)."""
    if STAGE_ATTR in trial.user_attrs:
        return int(trial.user_attrs[STAGE_ATTR])
    return stage_of_slot(stages, slot_of(trials, original_number(trial)))


def stage_finished(stages: Sequence[Stage], trials: Sequence[FrozenTrial], index: int) -> bool:
    """Every trial of stage ``index`` (retries included) has ended for good."""
    return all(_settled(trial, trials) for trial in _members(stages, trials, index))


def stage_ranges(spec: SearchSpec, trials: Sequence[FrozenTrial]) -> list[StageRanges]:
    """The ranges of every stage that can be known now (stage 0 is the declared space)."""
    ranges = [StageRanges(0, spec.stages[0], spec.parameters)]
    for index in range(1, len(spec.stages)):
        previous = ranges[-1]
        members = _members(spec.stages, trials, index - 1)
        if not members or not stage_finished(spec.stages, trials, index - 1):
            break
        kept = _best(spec, members, previous.stage.keep)
        if not kept:
            # Nothing of the previous stage completed (all failed or pruned): keep its ranges.
            ranges.append(StageRanges(index, spec.stages[index], previous.parameters))
            continue
        parameters = tuple(
            _tightened(parameter, [trial.params[parameter.path] for trial in kept], spec.margin)
            for parameter in previous.parameters
        )
        numbers = tuple(trial.number for trial in kept)
        ranges.append(StageRanges(index, spec.stages[index], parameters, numbers))
    return ranges


def _members(
    stages: Sequence[Stage], trials: Sequence[FrozenTrial], index: int
) -> list[FrozenTrial]:
    # By slot where the stage is not recorded yet: a worker records it just after Optuna
    # asks for the trial, and another worker must not see the stage finished meanwhile.
    return [trial for trial in trials if stage_of(stages, trials, trial) == index]


def _settled(trial: FrozenTrial, trials: Sequence[FrozenTrial]) -> bool:
    """Finished for good: complete, pruned, or failed for good (:func:`failed_for_good`).

    A trial that failed otherwise (its worker was killed or interrupted, retries left) is
    settled only by a retry that settled.
    """
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    if trial.state == TrialState.FAIL:
        if failed_for_good(trial):
            return True
        retries = [t for t in trials if t.number > trial.number and is_retry(t)
                   and original_number(t) == original_number(trial)]  # fmt: skip
        return any(_settled(retry, trials) for retry in retries)
    return False


def _best(spec: SearchSpec, trials: Sequence[FrozenTrial], keep: int) -> list[FrozenTrial]:
    completed = [
        trial for trial in trials
        if trial.state == TrialState.COMPLETE and trial.value is not None
        and math.isfinite(trial.value)
    ]  # fmt: skip
    sign = 1.0 if spec.direction == "minimize" else -1.0
    completed.sort(key=lambda trial: (sign * float(trial.value or 0.0), trial.number))
    return completed[:keep]


def _tightened(parameter: Parameter, values: Sequence[Any], margin: float) -> Parameter:
    if not parameter.is_numeric:
        # By identity, not ``in``: True == 1 and 0.0 == False, but they are other trials.
        used = {_choice_identity(value) for value in values}
        kept = [choice for choice in parameter.choices if _choice_identity(choice) in used]
        return parameter.with_choices(kept or parameter.choices)
    to_axis, from_axis = (math.log, math.exp) if parameter.log else (float, float)
    low, high = to_axis(parameter.low), to_axis(parameter.high)
    points = [to_axis(float(value)) for value in values]
    pad = margin * (high - low)
    # At a bound, the bound itself (exp(log(x)) is not always x); inside, clip anyway.
    new_low = parameter.low if min(points) - pad <= low else from_axis(min(points) - pad)
    new_high = parameter.high if max(points) + pad >= high else from_axis(max(points) + pad)
    # The kept values stay inside: exp(log(x)) may land an ulp beside x (13.999999999999996
    # for 14, which a floor would turn into one more integer).
    new_low = min(max(new_low, parameter.low), parameter.high, min(values))
    new_high = max(min(new_high, parameter.high), parameter.low, max(values))
    if parameter.kind == "int":
        return parameter.within(math.floor(round(new_low, 9)), math.ceil(round(new_high, 9)))
    return parameter.within(new_low, new_high)
