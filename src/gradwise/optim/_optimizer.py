"""The one stateful shell: a real torch.optim.Optimizer that runs a gradient transform."""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, cast, get_args

import torch
from torch import Tensor

from gradwise._validation import Constraint, Interval, OneOf, check, check_all
from gradwise.optim._compiled import CompiledGroupStep
from gradwise.optim._torch_kernels import fused_kernel_devices
from gradwise.optim._transform import GradientTransform, State, running_param_group
from gradwise.schedules._check import torch_scheduler_error
from gradwise.schedules._plain_data import (
    is_schedule_data,
    keep_current_schedule,
    schedule_from_data,
    schedule_to_data,
)

Implementation = Literal["auto", "reference", "fused", "compiled"]
TransformFactory = Callable[..., GradientTransform]
_IMPLEMENTATIONS = OneOf(get_args(Implementation))


@dataclass
class _GroupRuntime:
    """What one param group needs between steps; rebuilt when its hyperparameters change.

    The transform is built when first used. A torch LR scheduler (gradwise's ScheduleLR
    too) writes a new lr into the group every step, so each step gets a new runtime; the
    fused path never uses the transform, and building it (with its state layout) cost
    about 40 us a step there.
    """

    hyperparameters_key: tuple[Any, ...]
    build_transform: Callable[[], GradientTransform] = field(repr=False)
    #: Every hyperparameter a plain number, bool, string or None (what fused kernels take).
    plain_hyperparameters: bool = False
    compiled: CompiledGroupStep | None = None
    last_implementation: str | None = field(default=None)
    _transform: GradientTransform | None = field(default=None, repr=False)
    _per_parameter_keys: tuple[str, ...] | None = field(default=None, repr=False)

    @property
    def transform(self) -> GradientTransform:
        if self._transform is None:
            self._transform = self.build_transform()
        return self._transform

    @property
    def per_parameter_keys(self) -> tuple[str, ...]:
        """The state entries kept per parameter (a list in the transform's state layout)."""
        if self._per_parameter_keys is None:
            layout = self.transform.init([])
            self._per_parameter_keys = tuple(k for k, v in layout.items() if isinstance(v, list))
        return self._per_parameter_keys


class Optimizer(torch.optim.Optimizer):
    r"""Run a gradient transform as a ``torch.optim.Optimizer``.

    ``transform`` is either a fixed :class:`GradientTransform`, or a factory that builds one
    from keyword hyperparameters. With a factory, the keyword arguments given here are the
    defaults, a param group may override any of them, and changing ``group["lr"]`` (as
    torch's LR schedulers do) takes effect on the next step::

        opt = Optimizer(
            model.parameters(),
            lambda lr, weight_decay: chain(
                clip_by_global_norm(1.0),
                scale_by_adam(),
                add_decayed_weights(weight_decay),
                scale_by_learning_rate(lr),
            ),
            lr=1e-3,
            weight_decay=1e-2,
        )

    Each step applies ``p <- p + u`` with ``u`` the transform's output for ``p.grad``.
    Parameters without ``.grad`` are skipped and their state does not advance, as in
    torch.optim. State lives in ``optimizer.state[p]`` under the transforms' key names;
    state shared by a whole group (a schedule's step count, a switching phase) lives under
    the key ``"param_group_<i>"``. ``state_dict`` / ``load_state_dict`` are torch's own.

    ``implementation`` picks how a step runs, at this one dispatch point:

    - ``"reference"``: the transforms' own pure functions, eagerly. The specification the
      fast paths are tested against.
    - ``"fused"``: torch's own implementation of the same algorithm, on supported devices
      and dtypes: its fused kernel (SGD, Adam, AdamW, Adagrad), or where torch has none
      (RMSprop, Adadelta, NAdam, RAdam; Adagrad on CUDA) the path torch's class takes by
      default: its foreach kernels on a GPU, one tensor at a time on the CPU.
    - ``"compiled"``: the reference functions compiled by ``torch.compile`` into fused
      kernels that update parameters and state in place. The first step compiles (tens of
      seconds on a CPU for a large model); inductor caches the kernels on disk, so later
      runs start in seconds. Worth it for large models, not for small ones.
    - ``"auto"`` (default): ``"fused"`` where available, else ``"reference"``. The choice is
      deterministic, so a run and its resumption take the same path.

    Example:
        >>> import torch
        >>> from gradwise.optim import Optimizer, chain, scale_by_adam, scale_by_learning_rate
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = Optimizer(model.parameters(), chain(scale_by_adam(), scale_by_learning_rate(0.1)))
        >>> model(torch.ones(1, 3)).sum().backward()
        >>> opt.step()
    """

    #: Constraints on the hyperparameters, checked at construction and in add_param_group.
    hyperparameter_constraints: ClassVar[Mapping[str, Constraint]] = {}
    #: Whether ``_fused_step`` runs torch's fused kernel for this algorithm.
    has_fused_kernel: ClassVar[bool] = False

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        transform: GradientTransform | TransformFactory,
        *,
        implementation: Implementation = "auto",
        **hyperparameters: Any,
    ) -> None:
        check("implementation", self._owner, implementation, _IMPLEMENTATIONS)
        if isinstance(transform, GradientTransform):
            if hyperparameters:
                raise ValueError(
                    f"{self._owner} got hyperparameters {sorted(hyperparameters)} with a fixed "
                    "transform. Pass a factory (a function of those hyperparameters that returns "
                    "the transform) so that param groups and LR schedulers can change them."
                )
        elif callable(transform):
            _check_factory_accepts(transform, hyperparameters, self._owner)
        else:
            raise TypeError(
                f"The 'transform' parameter of {self._owner} must be a GradientTransform or a "
                f"function returning one. Got {type(transform).__name__} instead."
            )
        if implementation == "fused" and not self.has_fused_kernel:
            raise ValueError(
                f"{self._owner} has no fused kernel; use implementation='compiled' for a fused "
                "fast path generated by torch.compile, or 'auto'."
            )
        self._transform_source = transform
        self.implementation: Implementation = implementation
        self._runtimes: dict[int, _GroupRuntime] = {}
        # Not self.defaults: torch adds its own flags there (differentiable, ...) on load.
        self.hyperparameter_names: tuple[str, ...] = tuple(hyperparameters)
        run_step_eagerly_under_torch_compile(Optimizer)
        super().__init__(params, defaults=dict(hyperparameters))
        self.register_load_state_dict_post_hook(_reset_after_load)

    # -- construction ------------------------------------------------------------------------

    @property
    def _owner(self) -> str:
        return type(self).__name__

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Validate the group's hyperparameters (with defaults filled in), then add it."""
        if isinstance(param_group, dict):
            self._refuse_repeated_parameters(param_group)
            if isinstance(self._transform_source, GradientTransform):
                _refuse_group_hyperparameters(param_group, self._owner)
            else:
                self._refuse_unknown_group_keys(param_group)
            merged = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
            self._validate_hyperparameters(merged)
            self._refuse_what_the_fused_kernel_cannot_take(merged)
            self._build_transform(merged)
        super().add_param_group(param_group)
        _wrap_param_groups(self)

    def _refuse_unknown_group_keys(self, param_group: Mapping[str, Any]) -> None:
        """A param group's key that reads like a hyperparameter, yet is none of this
        optimizer's, would be ignored: refuse it, as the constructor refuses it for the
        whole optimizer. That is a key close to one of its hyperparameters' names (a typo:
        ``"momentun": 0.9``, ``"nesterof": True``) or the name of another optimizer's
        hyperparameter (``"momentum"`` for Adam; ``"weight_decay"`` for an Optimizer whose
        factory takes it but was not given it).

        Passed: the keys torch.optim and its LR schedulers put in groups
        (:data:`_TORCH_GROUP_KEYS`), and other keys, which torch.optim keeps as metadata
        and other libraries read (``"name": "encoder"``; timm's layer-wise ``"lr_scale"``,
        which its schedulers multiply the lr by).
        """
        accepted = self.hyperparameter_names
        for key in param_group:
            if key in accepted or key in _TORCH_GROUP_KEYS or not isinstance(key, str):
                continue
            close = _closest(key, accepted)
            if not (close or key in _known_hyperparameters()):
                continue
            hint = f" Did you mean {close!r}?" if close else ""
            if type(self) is Optimizer:
                hint += " A group can override only the hyperparameters given to the Optimizer."
            raise ValueError(
                f"{self._owner} got the key {key!r} in param group {len(self.param_groups)}, "
                f"which is not one of its hyperparameters and would be ignored.{hint} Its "
                f"hyperparameters are: {sorted(accepted)}."
            )

    def _refuse_repeated_parameters(self, param_group: dict[str, Any]) -> None:
        """A tensor listed twice in one group: torch warns ("in future, this will cause an
        error") and steps it twice; the transforms would update it twice from one state."""
        params = param_group.get("params")
        if params is None or isinstance(params, Tensor | set):
            return  # torch's own errors
        params = param_group["params"] = list(params)  # read a generator once, as torch does
        seen: dict[int, int] = {}
        for position, tensor in enumerate(params):
            first = seen.setdefault(id(tensor), position)
            if first != position:
                shape = tuple(tensor.shape) if isinstance(tensor, Tensor) else None
                raise ValueError(
                    f"The 'params' parameter of {self._owner} must list each tensor once per "
                    f"param group. Got the tensor of shape {shape} at positions {first} and "
                    f"{position} instead; pass each parameter once (model.parameters() does; "
                    "a list joined from modules that share a layer repeats it)."
                )

    def _validate_hyperparameters(self, hyperparameters: Mapping[str, Any]) -> None:
        """Check the declared constraints, then the rules that relate several values."""
        check_all(self._owner, hyperparameters, self.hyperparameter_constraints)
        self._check_relations(hyperparameters)

    def _check_relations(self, hyperparameters: Mapping[str, Any]) -> None:
        """Rules that relate several hyperparameters (none here; subclasses add theirs)."""

    def _refuse_what_the_fused_kernel_cannot_take(self, hyperparameters: Mapping[str, Any]) -> None:
        """With ``implementation="fused"``, refuse here a hyperparameter torch's fused kernel
        cannot take (a schedule, a tensor), rather than at the first step. The parameters'
        device and dtype are checked at each step: ``module.to()`` can change them."""
        if self.implementation != "fused":
            return
        for name in self.hyperparameter_names:
            value = hyperparameters[name]
            if not _is_plain(value):
                raise ValueError(
                    f"The '{name}' parameter of {self._owner} must be a plain number with "
                    "implementation='fused' (fused=True): torch's fused kernel takes no "
                    f"schedule or tensor. Got {value!r} instead. Use implementation='auto' or "
                    f"'compiled' to keep it, or pass a float {name}."
                )

    def _build_transform(self, hyperparameters: Mapping[str, Any]) -> GradientTransform:
        source = self._transform_source
        if isinstance(source, GradientTransform):
            return source
        return source(**{name: hyperparameters[name] for name in self.hyperparameter_names})

    # -- the step ----------------------------------------------------------------------------

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Apply one update to every parameter that has a gradient; return the closure's loss.

        Under ``torch.compile`` (``torch.compile(opt.step)``, or a compiled function that
        calls it) the step is not traced: the graph breaks around it and it runs as it does
        eagerly (see :func:`run_step_eagerly_under_torch_compile`).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Gradient mode set and restored by hand: ``@torch.no_grad()`` makes a new context
        # object at every call (2.4 us against 1.1 us; a small model's step is 40-60 us).
        grad_enabled = torch.is_grad_enabled()
        torch.set_grad_enabled(False)
        try:
            for index, group in enumerate(self.param_groups):
                params, grads = [], []
                for p in group["params"]:
                    grad = p.grad
                    if grad is not None:
                        params.append(p)
                        grads.append(grad)
                if params:
                    self._step_group(index, group, params, grads)
        finally:
            torch.set_grad_enabled(grad_enabled)
        return loss

    def _step_group(
        self, index: int, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]
    ) -> None:
        if any(g.is_sparse for g in grads):
            raise _sparse_gradient_error(self._owner, params, grads)
        runtime = self._runtime(index, group)
        states = self._parameter_states(index, runtime, params)
        implementation = self._select_implementation(runtime, group, params)
        if implementation == "fused":
            runtime.last_implementation = implementation
            self._fused_step(group, params, grads, states)
            return
        views = [torch.view_as_real(p) if p.is_complex() else p for p in params]
        if implementation == "compiled":
            if runtime.compiled is None:
                runtime.compiled = CompiledGroupStep(
                    self._build_transform, self._hyperparameters(group)
                )
            if not runtime.compiled.supports(views):
                implementation = "reference"  # too many layouts compiled: see MAX_LAYOUTS
        runtime.last_implementation = implementation
        grad_views = [torch.view_as_real(g) if g.is_complex() else g for g in grads]
        state = self._gather_state(index, runtime, states, params)
        # The group's index is set only around the transforms, the one place that reads it
        # (a torch kernel does not): 1.5 us a step on the fused path.
        with running_param_group(index):
            if implementation == "compiled":
                assert runtime.compiled is not None  # noqa: S101 - created above
                new_state = runtime.compiled(self._hyperparameters(group), views, grad_views, state)
            else:
                updates, new_state = runtime.transform.update(grad_views, state, views)
                torch._foreach_add_(views, updates)
        self._scatter_state(index, states, new_state, params)

    def _select_implementation(
        self, runtime: _GroupRuntime, group: dict[str, Any], params: list[Tensor]
    ) -> str:
        """The one dispatch point between the reference, fused and compiled paths."""
        if self.implementation in ("auto", "fused"):
            if (
                self.has_fused_kernel
                and runtime.plain_hyperparameters
                and _fused_kernel_takes(params)
            ):
                return "fused"
            if self.implementation == "fused":
                raise RuntimeError(
                    f"{self._owner}'s fused kernel does not support this param group (it needs "
                    "floating-point parameters on a device with torch fused kernels and plain "
                    "float hyperparameters). Use implementation='auto' or 'compiled'."
                )
            return "reference"
        return self.implementation

    def _fused_step(
        self,
        group: Mapping[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
    ) -> None:
        """Run torch's fused kernel in place on ``states`` (overridden where torch has one)."""
        raise NotImplementedError(f"{self._owner} has no fused kernel.")

    @property
    def last_implementations(self) -> list[str | None]:
        """The path each param group's last step took (None if it has not stepped)."""
        return [
            self._runtimes[i].last_implementation if i in self._runtimes else None
            for i in range(len(self.param_groups))
        ]

    # -- state bookkeeping -------------------------------------------------------------------

    def _hyperparameters(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {name: group[name] for name in self.hyperparameter_names}

    def _runtime(self, index: int, group: Mapping[str, Any]) -> _GroupRuntime:
        hyperparameters = self._hyperparameters(group)
        key = _hyperparameters_key(hyperparameters)
        runtime = self._runtimes.get(index)
        if runtime is None or runtime.hyperparameters_key != key:
            self._validate_changed(hyperparameters, runtime, key)
            compiled = runtime.compiled if runtime is not None else None
            build = functools.partial(self._build_transform, hyperparameters)
            plain = _is_value_key(key) or all(map(_is_plain, hyperparameters.values()))
            runtime = _GroupRuntime(key, build, plain, compiled)
            self._runtimes[index] = runtime
        return runtime

    def _validate_changed(
        self,
        hyperparameters: Mapping[str, Any],
        runtime: _GroupRuntime | None,
        key: tuple[Any, ...],
    ) -> None:
        """Validate a group's hyperparameters when its runtime is rebuilt. When both keys
        are values (see :func:`_hyperparameters_key`), only the constraints of the values
        that changed are checked again, then the relations: an LR scheduler changes
        ``lr`` every step, and checking all of them cost 5 us of the 11 us a rebuild took
        (SGD on the small-step benchmark)."""
        old = runtime.hyperparameters_key if runtime is not None else None
        if old is None or not (_is_value_key(old) and _is_value_key(key)):
            self._validate_hyperparameters(hyperparameters)
            return
        constraints = self.hyperparameter_constraints
        count = len(hyperparameters)  # the values, then their types
        for position, name in enumerate(hyperparameters):
            changed = (
                key[position] != old[position] or key[count + position] != old[count + position]
            )
            if changed and name in constraints:
                check(name, self._owner, key[position], constraints[name])
        self._check_relations(hyperparameters)

    def _parameter_states(
        self, index: int, runtime: _GroupRuntime, params: list[Tensor]
    ) -> list[dict[str, Any]]:
        """Each parameter's state dict, created on its first step as torch.optim does lazily.

        One lookup per parameter per step: the dicts are then read and written directly.
        """
        states = [self.state.get(p) for p in params]
        fresh = [i for i, state in enumerate(states) if state is None]
        if fresh:
            self._initialize_state(index, runtime, [params[i] for i in fresh])
            for i in fresh:
                states[i] = self.state[params[i]]
        return cast(list[dict[str, Any]], states)

    def _initialize_state(self, index: int, runtime: _GroupRuntime, fresh: list[Tensor]) -> None:
        initial = runtime.transform.init(
            [torch.view_as_real(p) if p.is_complex() else p for p in fresh]
        )
        for p in fresh:
            self.state[p] = {}
        for key, value in initial.items():
            if not isinstance(value, list):
                self._shared_state(index, create=True).setdefault(key, value)
                continue
            for p, entry in zip(fresh, value, strict=True):
                if entry is not None:
                    self.state[p][key] = _stored(entry, p)

    def _gather_state(
        self,
        index: int,
        runtime: _GroupRuntime,
        states: list[dict[str, Any]],
        params: list[Tensor],
    ) -> State:
        state: State = {
            key: [
                _as_view(parameter_state.get(key), p)
                for parameter_state, p in zip(states, params, strict=True)
            ]
            for key in runtime.per_parameter_keys
        }
        state.update(self._shared_state(index))
        return state

    def _shared_state(self, index: int, *, create: bool = False) -> dict[str, Any]:
        """State shared by a whole param group, kept in ``self.state`` under a string key
        once there is some (``create``): an empty entry would stop torch.optim.Adagrad
        from loading the state_dict (it reads the ``step`` of the first state entry)."""
        states = cast(dict[str, Any], self.state)
        key = _shared_key(index)
        if create and key not in states:
            states[key] = {}
        return cast(dict[str, Any], states.get(key, {}))

    def _scatter_state(
        self,
        index: int,
        states: list[dict[str, Any]],
        new_state: State,
        params: list[Tensor],
    ) -> None:
        for key, value in new_state.items():
            if not isinstance(value, list):
                self._shared_state(index, create=True)[key] = value
                continue
            for parameter_state, entry, p in zip(states, value, params, strict=True):
                if entry is None:
                    parameter_state.pop(key, None)
                else:
                    parameter_state[key] = _stored(entry, p)

    # -- checkpoints -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """torch's state_dict, with each gradwise schedule in a param group as plain data.

        A schedule (``lr=cosine_decay(...)``, a warmup or a join of them, a
        :class:`~gradwise.schedules.ReduceOnPlateau` with its counters) is written as a dict
        of its kind and arguments, so ``torch.load`` reads the checkpoint with its default
        ``weights_only=True``. A function of your own stays as it is: ``torch.save`` pickles
        it by reference, and loading needs ``weights_only=False`` (a file you trust).
        """
        state_dict = super().state_dict()
        state_dict["param_groups"] = [
            {key: _schedule_as_data(value) for key, value in group.items()}
            for group in state_dict["param_groups"]
        ]
        return state_dict

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """torch's load_state_dict; a schedule written as plain data is rebuilt.

        Where a group already holds the same schedule (same kind and arguments), that
        object is kept and given the saved state, so a ``ReduceOnPlateau`` you call
        ``observe`` on goes on driving the resumed optimizer. Schedule objects (checkpoints
        written before schedules were plain data) load as before.

        State of another shape than its parameter's (a checkpoint of another model) is a
        ValueError, and nothing is loaded.
        """
        previous = [dict(group) for group in self.param_groups]
        groups = [
            {key: _schedule_from_data(value) for key, value in group.items()}
            for group in state_dict["param_groups"]
        ]
        for index, group in enumerate(groups):
            self._fill_missing_hyperparameters(index, group)
        self._refuse_state_of_other_shapes(state_dict["state"], groups)
        super().load_state_dict({**state_dict, "param_groups": groups})
        for group, before in zip(self.param_groups, previous, strict=True):
            for key in group.keys() - {"params"}:
                group[key] = keep_current_schedule(before.get(key), group[key])

    def _fill_missing_hyperparameters(self, index: int, group: dict[str, Any]) -> None:
        """Give a saved param group the flags torch.optim added over its versions, as
        torch's own ``__setstate__`` does (a torch 2.4 Adam checkpoint has no
        ``decoupled_weight_decay``); refuse one that lacks any other hyperparameter, before
        anything is loaded: it was saved by another optimizer, and each step would fail
        with a bare ``KeyError``."""
        for name in self.hyperparameter_names:
            if name not in group and name in _FLAGS_OF_OLDER_CHECKPOINTS:
                group[name] = _FLAGS_OF_OLDER_CHECKPOINTS[name]
        missing = sorted(name for name in self.hyperparameter_names if name not in group)
        if missing:
            present = sorted(key for key in group if key != "params")
            raise ValueError(
                f"The 'state_dict' parameter of {self._owner}.load_state_dict must hold the "
                f"hyperparameters {self._owner} uses in each param group. Got param group "
                f"{index} without {missing} (it holds {present}) instead: it was saved by "
                "another optimizer. Load it into the kind of optimizer that saved it."
            )

    def _refuse_state_of_other_shapes(
        self, saved_state: Mapping[Any, Any], groups: list[dict[str, Any]]
    ) -> None:
        """Refuse, before anything is loaded, a checkpoint whose per-parameter state does
        not have the shape this optimizer keeps for its parameter.

        torch's load_state_dict pairs the saved state with the parameters by position and
        casts it, but never compares shapes: a checkpoint of another model loaded, and
        torch's fused kernels (the ``"auto"`` path) then read and wrote past the end of the
        smaller tensors (a segmentation fault, or silently wrong numbers); the reference
        path broadcast a (1,) momentum buffer silently. Only the state the transform keeps
        per parameter is compared (the state of a torch.optim checkpoint of the same model
        has the same shapes; other entries are not read): each entry must have the shape
        the transform's ``init`` gives it (step counters 0-d, buffers the parameter's
        shape), or the parameter's shape where ``init`` leaves it None (a momentum buffer
        made at the first update).
        """
        own_groups = self.param_groups
        if len(groups) != len(own_groups) or any(
            len(saved["params"]) != len(own["params"])
            for saved, own in zip(groups, own_groups, strict=True)
        ):
            return  # torch's own ValueError says so
        for index, (saved, own) in enumerate(zip(groups, own_groups, strict=True)):
            params: list[Tensor] = own["params"]
            stored = {
                position: saved_state[key]
                for position, key in enumerate(saved["params"])
                if isinstance(saved_state.get(key), Mapping)
            }
            if not stored:
                continue
            expected = _state_shapes(self._build_transform(saved), params)
            for position, entries in stored.items():
                p = params[position]
                for key, shape in expected[position].items():
                    entry = entries.get(key)
                    # None, or a number (a torch 1.x step count): nothing to compare.
                    if isinstance(entry, Tensor) and _view_shape(entry, p) != shape:
                        raise ValueError(
                            f"The 'state_dict' parameter of {self._owner}.load_state_dict must "
                            "hold state of the shape this optimizer keeps for each parameter. "
                            f"Got {key!r} of shape {tuple(entry.shape)} for parameter "
                            f"{position} of param group {index}, whose shape is "
                            f"{tuple(p.shape)}{_kept_shape(key, shape, p)}, instead: the "
                            "checkpoint was made for another model (or its parameters in "
                            "another order). Load it into an optimizer of the model that saved "
                            "it; nothing was loaded."
                        )

    def __getstate__(self) -> dict[str, Any]:
        # torch's Optimizer keeps defaults, state and param_groups and drops the rest (its
        # hooks may hold anything); gradwise's own attributes (the transform, the
        # hyperparameter names, a subclass's settings) must travel too, or a deepcopied or
        # pickled optimizer cannot step. The runtimes (compiled code) are rebuilt.
        state = dict(super().__getstate__())
        torch_attributes = _torch_optimizer_attributes()
        state.update(
            (key, value)
            for key, value in vars(self).items()
            if key not in torch_attributes and key != "_runtimes"
        )
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        run_step_eagerly_under_torch_compile(Optimizer)  # torch's __setstate__ wraps step too
        super().__setstate__(state)
        _wrap_param_groups(self)
        self._runtimes = {}
        if _reset_after_load not in self._optimizer_load_state_dict_post_hooks.values():
            self.register_load_state_dict_post_hook(_reset_after_load)


def run_step_eagerly_under_torch_compile(optimizer_class: type[torch.optim.Optimizer]) -> None:
    """Wrap ``optimizer_class.step`` in ``torch.compiler.disable``, once, before the first
    optimizer is made (torch.optim wraps each class's step in its hooks there).

    Dynamo cannot trace an :class:`Optimizer`'s param groups, dict subclasses
    (``'UserDefinedDictVariable' object has no attribute 'items'``), and inductor refused
    Newton's in-place updates, so ``torch.compile(opt.step)`` and a compiled training step
    that calls ``opt.step()`` crashed; now the graph breaks around the step,
    which runs eagerly, and ``implementation="compiled"`` still runs its own compiled code
    inside. Done here rather than as a decorator: ``torch.compiler.disable`` imports
    torch._dynamo (1.4 s), which making a torch optimizer does anyway and ``import
    gradwise`` must not. The wrapper costs 0.3-0.5 us a step (measured on a no-op; a small
    model's step is 20-40 us).
    """
    step = optimizer_class.__dict__["step"]
    if not getattr(step, "_gradwise_eager_under_compile", False):
        eager_step = torch.compiler.disable(step)
        eager_step._gradwise_eager_under_compile = True
        optimizer_class.step = eager_step  # type: ignore[method-assign]


#: Flags torch.optim added to its optimizers over its versions, with the value a group of
#: an older checkpoint had (torch's ``__setstate__`` fills them so too).
_FLAGS_OF_OLDER_CHECKPOINTS: Mapping[str, Any] = {
    "amsgrad": False,
    "centered": False,
    "decoupled_weight_decay": False,
    "maximize": False,
    "nesterov": False,
}


@functools.cache
def _torch_optimizer_attributes() -> frozenset[str]:
    """What a plain torch optimizer holds (its hooks, profiling names, flags): torch decides
    what of it to pickle. Found when first needed: making a torch optimizer imports
    torch._dynamo (add_param_group is wrapped to disable it), 1.3 s that every
    ``import gradwise`` paid when this ran at import time."""
    return frozenset(vars(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)))


def _state_shapes(
    transform: GradientTransform, params: list[Tensor]
) -> list[dict[str, tuple[int, ...]]]:
    """The shape of each per-parameter state entry ``transform`` keeps for each parameter,
    as the transforms see it (a complex parameter's real view, shape ``(..., 2)``).

    ``init`` runs on meta tensors (shapes, no memory); an entry it leaves None (made at the
    first update, as SGD's momentum buffer) has the parameter's shape. A transform of your
    own that cannot run on meta tensors runs on the parameters themselves.
    """
    views = [torch.view_as_real(p) if p.is_complex() else p for p in params]
    try:
        layout = transform.init([torch.empty_like(view, device="meta") for view in views])
    except (RuntimeError, NotImplementedError):
        layout = transform.init(views)
    shapes: list[dict[str, tuple[int, ...]]] = [{} for _ in params]
    for key, value in layout.items():
        if not isinstance(value, list):
            continue  # shared by the group
        for shape, entry, view in zip(shapes, value, views, strict=True):
            shape[key] = tuple((entry if isinstance(entry, Tensor) else view).shape)
    return shapes


def _view_shape(entry: Tensor, param: Tensor) -> tuple[int, ...]:
    """A saved state entry's shape as the transforms see it (complex state as its real view)."""
    if entry.is_complex() and param.is_complex():
        return (*entry.shape, 2)
    return tuple(entry.shape)


def _kept_shape(key: str, shape: tuple[int, ...], param: Tensor) -> str:
    """Where the state is not of the parameter's shape (a 0-d step counter), say which."""
    view = (*param.shape, 2) if param.is_complex() else tuple(param.shape)
    return "" if shape == view else f" (its {key!r} has shape {shape})"


def _schedule_as_data(value: Any) -> Any:
    data = schedule_to_data(value)
    return value if data is None else data


def _schedule_from_data(value: Any) -> Any:
    return schedule_from_data(value) if is_schedule_data(value) else value


def _stored(entry: Any, param: Tensor) -> Any:
    """A state entry as torch keeps it: the transforms work on a complex parameter's real
    view (shape ``(..., 2)``), torch.optim keeps its state complex, of the parameter's
    shape, so that checkpoints load both ways."""
    if (
        param.is_complex()
        and isinstance(entry, Tensor)
        and not entry.is_complex()
        and entry.shape == (*param.shape, 2)
        and entry.dtype == param.real.dtype
    ):
        return torch.view_as_complex(entry if entry.is_contiguous() else entry.contiguous())
    return entry


def _as_view(entry: Any, param: Tensor) -> Any:
    """The inverse of :func:`_stored`: a complex state entry as the real view transforms
    work on (the same memory, so in-place updates land in the stored state)."""
    if param.is_complex() and isinstance(entry, Tensor) and entry.is_complex():
        return torch.view_as_real(entry)
    return entry


def _shared_key(index: int) -> str:
    return f"param_group_{index}"


def next_step_lr(optimizer: torch.optim.Optimizer, index: int = 0) -> float | None:
    """The learning rate param group ``index`` of ``optimizer`` uses at its next step.

    Works for any ``torch.optim.Optimizer``. A number (or one-element tensor) in
    ``group["lr"]`` is returned as it is: torch's LR schedulers and gradwise's
    :class:`~gradwise.schedules.ScheduleLR` write the next step's rate there. For a gradwise
    :class:`Optimizer` whose lr is a schedule (``SGD(lr=cosine_decay(...))``), it is the
    schedule at the group's step count (0 before the group's first step). None when the
    group has no lr (a fixed transform keeps its rate inside) or it is neither.

    Read it before ``optimizer.step()`` for the rate that step uses.

    Example:
        >>> import torch
        >>> from gradwise.optim import SGD, next_step_lr
        >>> from gradwise.schedules import linear_decay
        >>> model = torch.nn.Linear(2, 1)
        >>> opt = SGD(model.parameters(), lr=linear_decay(1.0, final=0.0, num_steps=4))
        >>> model(torch.ones(1, 2)).sum().backward()
        >>> next_step_lr(opt), opt.step(), next_step_lr(opt)
        (1.0, None, 0.75)
    """
    groups = optimizer.param_groups
    if not Interval(low=0, high=len(groups) - 1, kind="int").is_satisfied_by(index):
        raise ValueError(
            f"The 'index' parameter of next_step_lr must be the index of one of the "
            f"optimizer's param groups, an int in [0, {len(groups) - 1}]. Got {index!r} "
            f"instead (the optimizer has {len(groups)} param group"
            f"{'' if len(groups) == 1 else 's'})."
        )
    value = groups[index].get("lr")
    if isinstance(value, Tensor):
        return float(value) if value.numel() == 1 else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(optimizer, Optimizer) and callable(value):
        # scale_by_learning_rate counts the schedule's steps; SWATS evaluates its lr at
        # the group's own step count.
        shared = cast(dict[str, Any], optimizer.state).get(_shared_key(index), {})
        step = shared.get("schedule_step", shared.get("step"))
        return float(value(0 if step is None else int(step)))
    return None


class MissingHyperparameterError(KeyError):
    """A key read from a param group of an Optimizer with a fixed transform, which has none.

    A KeyError, so ``except KeyError`` still catches it, but one whose message says why
    the key is missing and what to do instead of torch's bare ``KeyError: 'lr'``.
    """

    def __init__(self, key: Any) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return (
            f"This param group has no {self.key!r}: the Optimizer was given a fixed "
            "GradientTransform, whose param groups hold no hyperparameters, so code that "
            f"reads or changes group[{self.key!r}] (such as a torch LR scheduler) cannot work. "
            "Pass a factory and the hyperparameters instead, e.g. Optimizer(params, lambda lr: "
            "chain(..., scale_by_learning_rate(lr)), lr=1e-3), or keep the fixed transform and "
            "put a gradwise schedule inside it, e.g. scale_by_learning_rate("
            "gradwise.schedules.cosine_decay(1e-3, num_steps=1000))."
        )


class _FixedTransformParamGroup(dict[str, Any]):
    """A param group of an Optimizer with a fixed transform: a plain dict whose missing keys
    raise :class:`MissingHyperparameterError` (``get`` and ``in`` are unchanged)."""

    __slots__ = ()

    def __missing__(self, key: Any) -> Any:
        raise MissingHyperparameterError(key)


class _FactoryParamGroup(dict[str, Any]):
    """A param group of an Optimizer with a transform factory: a plain dict that refuses a
    torch LR scheduler while its lr is a schedule, when the scheduler is made.

    Every torch LR scheduler but ReduceLROnPlateau and CyclicLR stores ``initial_lr`` in
    each group first thing (``setdefault``; OneCycleLR assigns it), before it changes
    anything; later it computes with ``group["lr"]`` as a number, which failed deep inside
    torch with a bare TypeError, or (OneCycleLR) replaced the schedule without a word.
    """

    __slots__ = ()

    def __setitem__(self, key: str, value: Any) -> None:
        # A loaded checkpoint puts back an initial_lr that is already there.
        if key == "initial_lr" and key not in self:
            self._refuse_a_torch_scheduler()
        super().__setitem__(key, value)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key == "initial_lr":
            self._refuse_a_torch_scheduler()
        return super().setdefault(key, default)

    def _refuse_a_torch_scheduler(self) -> None:
        lr = self.get("lr")
        if callable(lr) and not isinstance(lr, Tensor):
            raise torch_scheduler_error(lr)


def _wrap_param_groups(optimizer: Optimizer) -> None:
    """Make every param group the dict its kind of transform needs (a fixed transform's
    :class:`_FixedTransformParamGroup`, a factory's :class:`_FactoryParamGroup`): torch's
    add_param_group keeps the dict it was given, and load_state_dict makes plain dicts."""
    kind = (
        _FixedTransformParamGroup
        if isinstance(optimizer._transform_source, GradientTransform)
        else _FactoryParamGroup
    )
    optimizer.param_groups[:] = [
        group if type(group) is kind else kind(group) for group in optimizer.param_groups
    ]


def _reset_after_load(optimizer: torch.optim.Optimizer) -> None:
    """Give group-shared state its own copies on the group's device, put step counters on
    their parameter's device, and rebuild runtimes.

    torch's load_state_dict casts and places per-parameter state but copies other entries
    by reference; without this, two optimizers loaded from one state_dict would share them.
    It also leaves ``step`` on the CPU unless a group says ``fused`` or ``capturable``, which
    gradwise's groups never do: a GPU run resumed from a checkpoint would hand torch's
    fused kernels CPU step counters (they refuse them). gradwise keeps every step counter
    on its parameter's device (:func:`~gradwise.optim._transform.step_counters`).
    """
    assert isinstance(optimizer, Optimizer)  # noqa: S101 - hook registered by Optimizer only
    for parameter, state in optimizer.state.items():
        step = state.get("step") if isinstance(parameter, Tensor) else None
        if isinstance(step, Tensor) and step.device != parameter.device:
            state["step"] = step.to(parameter.device)
    for index, group in enumerate(optimizer.param_groups):
        key = _shared_key(index)
        states = cast(dict[str, Any], optimizer.state)
        if key in states and group["params"]:
            device = group["params"][0].device
            states[key] = {
                name: value.detach().clone().to(device) if isinstance(value, Tensor) else value
                for name, value in states[key].items()
            }
    _wrap_param_groups(optimizer)
    optimizer._runtimes = {}


def _sparse_gradient_error(owner: str, params: list[Tensor], grads: list[Tensor]) -> RuntimeError:
    """The error for a sparse gradient (``nn.Embedding(sparse=True)``): the transforms are
    dense, element-wise functions, so say which parameter and how to step it instead."""
    shape = next(tuple(p.shape) for p, g in zip(params, grads, strict=True) if g.is_sparse)
    return RuntimeError(
        f"{owner} does not support sparse gradients. Got a sparse gradient for a parameter of "
        f"shape {shape} (from nn.Embedding or nn.EmbeddingBag with sparse=True). Create that "
        "layer with sparse=False, or step its parameters with a separate torch.optim "
        "optimizer that takes sparse gradients (SparseAdam, SGD, Adagrad)."
    )


def _fused_kernel_takes(params: list[Tensor]) -> bool:
    """Whether torch's fused kernels take these parameters (their hyperparameters are
    checked once per runtime: :attr:`_GroupRuntime.plain_hyperparameters`)."""
    # One check per distinct (device, dtype): checking every tensor cost 140 us per step
    # for 100 parameters, most of torch's own fused SGD step.
    devices = fused_kernel_devices()
    for device, dtype in {(p.device, p.dtype) for p in params}:
        if device.type not in devices or not dtype.is_floating_point or dtype.is_complex:
            return False
    return True


def _is_plain(value: Any) -> bool:
    if isinstance(value, tuple | list):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, bool | int | float | str)


_PLAIN_SCALARS = frozenset((float, int, bool, str, type(None)))


class _ValueKey(tuple):  # type: ignore[type-arg]
    """The hyperparameters' values, then their types (see :func:`_hyperparameters_key`)."""

    __slots__ = ()


def _hyperparameters_key(hyperparameters: Mapping[str, Any]) -> tuple[Any, ...]:
    """The key a runtime is rebuilt on: the values themselves when they are plain scalars
    or tuples of them, such as Adam's betas (the common case, checked every step: 1 us,
    against 7 us for :func:`_freeze` of Adam's seven values), followed by their types, a
    tuple's as a tuple of its items' types (a bool and an int can be equal: ``nesterov=1``
    or ``betas=(False, 0.999)`` must be checked again, not taken as what they equal)."""
    values = tuple(hyperparameters.values())
    kinds = tuple(map(type, values))
    if _PLAIN_SCALARS.issuperset(kinds):
        return _ValueKey(values + kinds)
    item_kinds: list[Any] = []
    for value, kind in zip(values, kinds, strict=True):
        if kind is tuple:
            items = tuple(map(type, value))
            if _PLAIN_SCALARS.issuperset(items):
                item_kinds.append(items)
                continue
        elif kind in _PLAIN_SCALARS:
            item_kinds.append(kind)
            continue
        return _freeze(hyperparameters)
    return _ValueKey(values + tuple(item_kinds))


def _is_value_key(key: tuple[Any, ...]) -> bool:
    return type(key) is _ValueKey


def _freeze(value: Any) -> Any:
    """A hashable key for hyperparameter values, so a runtime is rebuilt only when they change."""
    if isinstance(value, dict):
        return tuple((k, _freeze(v)) for k, v in value.items())
    if isinstance(value, tuple | list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, Tensor):
        return ("tensor", id(value), value._version)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return ("object", id(value))


def _refuse_group_hyperparameters(group: Mapping[str, Any], owner: str) -> None:
    """A fixed transform ignores a param group's numbers (``lr``, ``weight_decay``, ...):
    refuse them rather than train with values the user did not mean. Other keys (a
    ``name``, torch's boolean flags) are metadata and pass."""
    numbers = sorted(
        key for key, value in group.items() if key != "params" and _is_number_like(value)
    )
    if numbers:
        raise ValueError(
            f"{owner} got hyperparameters {numbers} in a param group with a fixed transform, "
            "which would ignore them. Pass a factory (a function of those hyperparameters "
            "that returns the transform) so that each group builds its own."
        )


#: Keys torch.optim puts in param groups (``add_param_group``: ``param_names``; its
#: optimizers' flags) and its LR schedulers add (``initial_lr``; OneCycleLR's ``max_lr``
#: and ``min_lr``; OneCycleLR's and CyclicLR's ``max_momentum`` and ``base_momentum``;
#: SWALR's ``swa_lr``): a group copied from another optimizer carries them.
_TORCH_GROUP_KEYS = frozenset(
    (
        "params",
        "param_names",
        "initial_lr",
        "max_lr",
        "min_lr",
        "max_momentum",
        "base_momentum",
        "swa_lr",
        "foreach",
        "fused",
        "capturable",
        "differentiable",
    )
)


@functools.cache
def _known_hyperparameters() -> frozenset[str]:
    """The hyperparameters of torch.optim's optimizers (their constructors' arguments but
    the parameters and the implementation flags) and of gradwise's."""
    import gradwise.optim as gradwise_optim

    bases = (torch.optim.Optimizer, Optimizer)  # (params, defaults), (params, transform)
    classes = [
        value
        for module in (torch.optim, gradwise_optim)
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, bases[0]) and value not in bases
    ]
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = {
        name
        for cls in classes
        for name, parameter in inspect.signature(cls.__init__).parameters.items()
        if parameter.kind in named and name not in ("self", "params", "implementation")
    }
    return frozenset(names - _TORCH_GROUP_KEYS)


def _closest(key: str, accepted: Iterable[str]) -> str | None:
    """The hyperparameter a misspelt key most likely meant (same letters in another case
    first), as the run config's "did you mean" does."""
    names = list(accepted)
    same_letters = [name for name in names if name.lower() == key.lower()]
    close = same_letters[:1] or difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    return close[0] if close else None


def _is_number_like(value: Any) -> bool:
    if isinstance(value, tuple | list):
        return bool(value) and all(map(_is_number_like, value))
    return (isinstance(value, int | float | Tensor)) and not isinstance(value, bool)


def _check_factory_accepts(
    factory: TransformFactory, hyperparameters: Mapping[str, Any], owner: str
) -> None:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    parameters = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    accepted = {p.name for p in parameters}
    unknown = sorted(set(hyperparameters) - accepted)
    if unknown:
        raise ValueError(
            f"{owner} got hyperparameters {unknown} that its transform factory does not accept. "
            f"It accepts: {sorted(accepted)}."
        )
    missing = sorted(
        p.name
        for p in parameters
        if p.default is inspect.Parameter.empty and p.name not in hyperparameters
    )
    if missing:
        raise ValueError(
            f"{owner} needs default values for the factory's hyperparameters {missing}; pass "
            "them as keyword arguments."
        )


def implementation_from_torch_flags(
    owner: str,
    implementation: Implementation,
    *,
    foreach: bool | None = None,
    fused: bool | None = None,
    capturable: bool = False,
    differentiable: bool = False,
) -> Implementation:
    """Map torch.optim's implementation flags onto ``implementation``.

    ``fused=True`` asks for torch's fused kernel, ``fused=False`` rules it out; ``foreach``
    has no counterpart (every path works on lists) and is accepted for drop-in use.
    ``capturable`` and ``differentiable`` are not supported and say so.
    """
    if capturable:
        raise ValueError(
            f"The 'capturable' parameter of {owner} is not supported: gradwise does not capture "
            "optimizer steps in CUDA graphs. Leave capturable=False; implementation='compiled' "
            "gives a fused step instead."
        )
    if differentiable:
        raise ValueError(
            f"The 'differentiable' parameter of {owner} is not supported: gradwise steps run "
            "under no_grad. Leave differentiable=False."
        )
    if fused and foreach:
        raise ValueError(f"{owner}: `fused` and `foreach` cannot be `True` together.")
    if fused is None:
        return implementation
    if fused:
        if implementation not in ("auto", "fused"):
            raise ValueError(
                f"{owner} got fused=True and implementation={implementation!r}, which disagree. "
                "Pass only one of them."
            )
        return "fused"
    if implementation == "fused":
        raise ValueError(
            f"{owner} got fused=False and implementation='fused'. Pass only one of them."
        )
    return "reference" if implementation == "auto" else implementation
