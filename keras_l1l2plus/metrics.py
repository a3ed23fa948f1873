"""The penalty terms as a metric computed inside Keras's train and test steps, and its attachment.

Keras's `loss` is a running mean, over the steps of an epoch, of each step's
total loss, weighted by batch size. `PenaltyMetric` keeps the same running
means of

    l1_weight, l1_bias, l2_weight, l2_bias, penalty    (from `penalty_terms`)
    data_loss = loss − penalty

updated in the same step, from the same weights (those the step's loss used,
before the optimizer's update) and with the same batch-size weights, so that
`loss == data_loss + penalty` at every logged point. In evaluation the same
metric gives `val_data_loss = val_loss − penalty` at the evaluated weights.

`Attachment` is a `PenaltyLogger`'s hold on a model. While attached, the
model's `compute_loss` records the terms of each step's loss into the metric,
the metric is among `model.metrics` (so its values are in the logs Keras hands
to every callback, whatever their order), and the model's step functions are
`steps.StepSwitch`es. A step runs logged only when the logger claimed it just
before; any other call of the model's step functions, and any reset of the
metric after the model was recompiled, detaches everything. So a `fit` that
raises leaves nothing that a later `fit`, `evaluate` or `train_on_batch`
would run. The traced logged and plain steps are kept for the next logged
`fit` (no retrace) until the model is recompiled or regularized anew.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from typing import Any, Callable, Iterable

import keras
import numpy as np
from keras import ops

from keras_l1l2plus import _keras
from keras_l1l2plus.proximal import proximal_roles, uses_proximal_step
from keras_l1l2plus.regularizer import in_dtype, recording_terms
from keras_l1l2plus.schedule import lambda_variables
from keras_l1l2plus.steps import KINDS, StepSwitch, make_step_function
from keras_l1l2plus.terms import penalty_sums, sparsity

__all__ = ["Attachment", "PenaltyMetric", "attachment"]

_ATTRIBUTE = "_keras_l1l2plus_attachment"
_ABSENT = object()


class PenaltyMetric(_keras.MetricContainer):
    """Running means of the penalty terms and the data loss, and the sparsity.

    `add_step(loss, batch_size, recorded)` takes the terms of one step's loss
    (`terms.penalty_sums`, reusing the sums the `L1L2Plus` calls of that loss
    recorded, so nothing is computed twice), with `data_loss = loss −
    penalty`, and accumulates every value times `batch_size`, all in one
    product and one write whatever the number of variables; `result()` is
    the dict of totals / Σ batch_size. `sparsity_<role>` for each role of
    `sparsity_roles`, the fraction of exact zeros among that role's variables
    that take the proximal step (`keras_l1l2plus.terms.sparsity` with
    `proximal_only=True`), is not averaged: it is the value at the weights of
    the latest step.

    `update_state(...)` does nothing: the terms come from the step's loss,
    not from `(y, y_pred)`, so a custom `train_step` that updates every
    metric of `model.metrics` with `(y, y_pred)` leaves this one exact.
    """

    def __init__(self, model: Any, *, term_keys: tuple[str, ...], sparsity_roles: tuple[str, ...] = (),
                 lambdas: dict[str, Any] | None = None, per_layer: bool = False, name: str = "penalty_terms"):
        keras.metrics.Metric.__init__(self, name=name, dtype="float32")
        self._sums = lambda recorded=None: penalty_sums(model, per_layer=per_layer, recorded=recorded)
        self._sparsity = lambda: sparsity(model, roles=sparsity_roles, proximal_only=True)
        self.mean_keys = (*term_keys, "data_loss")  # term_keys: those of penalty_sums(model, per_layer=...)
        lambdas = dict(lambdas or {})  # scheduled λ variables, read in the step
        # In a closure: as attributes, Keras would track them as this metric's own state.
        self._lambda_values = lambda: [ops.cast(e.read(), "float32") for e in lambdas.values()]
        self.lambda_ids = tuple(id(v) for v in lambdas.values())
        self.latest_keys = latest_keys(sparsity_roles, lambdas)
        self.keys = self.mean_keys + self.latest_keys
        # Every value here is lower-is-better for monitoring, but sparsity.
        self.metrics = [_keras.lower_is_better(key) for key in self.mean_keys]
        # Σ value·batch_size for each mean key, then Σ batch_size: one write per step.
        self._totals = self.add_variable(shape=(len(self.mean_keys) + 1,), initializer="zeros", name="totals")
        self._latest = self.add_variable(
            shape=(len(self.latest_keys),), initializer="zeros", aggregation="mean", name="latest"
        ) if self.latest_keys else None
        self.on_reset: Callable[[], None] | None = None
        self._warned_keys = False

    def update_state(self, *args, **kwargs) -> None:
        """Ignored: see the class docstring."""

    def add_step(self, loss: Any, batch_size: Any, recorded: dict | None = None) -> None:
        """Adds one step: its loss, batch size, and the terms its loss recorded."""
        plan = self._sums(recorded)
        # One product for every running sum (`PenaltySums.combine`): the rows are the
        # terms, then the loss, then 1; the columns are this metric's keys, then the batch count:
        #   key = Σ λ_i·s_i over its terms,  data_loss = loss − Σ λ_i·s_i,  count = 1.
        n, k = len(plan.sums), len(self.mean_keys)
        counts_in = np.zeros((n + 2, k + 1), dtype="float32")
        if plan.keys != self.mean_keys[:-1]:
            self._warn_keys()
        columns = [self.mean_keys.index(key) if key in self.mean_keys else None for key in plan.keys]
        for j, column in enumerate(columns):
            if column is not None:
                counts_in[:n, column] = plan.counts_in[:, j]
        counts_in[:n, k - 1] = -plan.counts_in[:, plan.keys.index("penalty")]
        counts_in[n, k - 1] = counts_in[n + 1, k] = 1.0
        loss = ops.stop_gradient(in_dtype(ops.sum(loss), "float32"))  # a value for the logs, not part of the gradient
        values = plan.combine([*plan.sums, loss, 1.0], [*plan.factors, 1.0, 1.0], counts_in)
        self._totals.assign_add(values * ops.cast(batch_size, "float32"))
        if self._latest is not None:
            latest = [*self._sparsity().values(), *self._lambda_values()]
            self._latest.assign(ops.stack(latest))

    def _warn_keys(self) -> None:
        """Once: `regularize` changed the regularized layers mid-fit; per-layer keys stay as they were."""
        if not self._warned_keys:
            self._warned_keys = True
            warnings.warn(
                "PenaltyLogger(per_layer=True): the regularized layers changed during fit; "
                "per-layer keys stay those of the fit's start (the totals stay exact). "
                "The new layers show from the next fit.",
                stacklevel=3,
            )

    def reset_state(self) -> None:
        self._totals.assign(ops.zeros(self._totals.shape, "float32"))
        if self._latest is not None:
            self._latest.assign(ops.zeros(self._latest.shape, "float32"))
        if self.on_reset is not None:
            self.on_reset()

    def result(self) -> dict[str, Any]:
        totals = ops.convert_to_tensor(self._totals)
        # zip drops the last entry, the count itself.
        result = dict(zip(self.mean_keys, ops.unstack(ops.divide(totals, ops.maximum(totals[-1], 1.0)))))
        if self._latest is not None:
            result.update(zip(self.latest_keys, ops.unstack(ops.convert_to_tensor(self._latest))))
        return result

    def get_config(self) -> dict[str, Any]:
        # Lives only while a PenaltyLogger is attached; it is not saved.
        return {"name": self.name}


def _batch_size(x: Any, y_pred: Any) -> Any:
    """The batch size Keras weights its loss tracker by: the first input's."""
    for tensor in keras.tree.flatten(x if x is not None else y_pred):
        if tensor is not None:
            return ops.shape(tensor)[0]
    return 1


class Attachment:
    """A `PenaltyLogger`'s hold on one model: the metric, the loss hook, the step switches.

    Created once per model and kept (inert) between fits, so that the traced
    steps are reused; `attached` is True only while a logger holds it.
    """

    def __init__(self, model: Any):
        self.model = model
        self.metric: PenaltyMetric | None = None
        self.switches: dict[str, StepSwitch] = {}
        self.logger: Any = None
        self.attached = False
        self._claims: set[str] = set()
        self._running: Any = None  # the frame of the fit/evaluate the logger runs in
        self._hooked = False
        self._user_compute_loss: Any = _ABSENT
        self._loss_calls = 0

    # --- attach / detach -------------------------------------------------

    def attach(self, logger: Any) -> PenaltyMetric:
        """Makes `model`'s steps compute the terms, for `logger`'s fit or evaluate."""
        if self.attached:
            held = self.logger
            if held is not None and held is not logger and held.params and held.params is logger.params:
                raise ValueError(
                    "Two PenaltyLogger callbacks in one call of fit/evaluate: pass one. "
                    f"Received: {held!r} and {logger!r}"
                )
            if held is not None and held is not logger and _keras.is_running(self._running):
                return self._join(held, logger)
            self.detach()  # left by a call that raised, or by this logger
        model = self.model
        keys = penalty_sums(model, per_layer=logger.per_layer).keys
        roles = sparsity_roles(model)
        lambdas = lambda_variables(model)
        if (self.metric is None or self.metric.keys != (*keys, "data_loss", *latest_keys(roles, lambdas))
                or self.metric.lambda_ids != tuple(id(v) for v in lambdas.values())):
            strategy = getattr(model, "distribute_strategy", None)  # the TensorFlow trainer's
            with strategy.scope() if strategy is not None else contextlib.nullcontext():
                self.metric = PenaltyMetric(model, per_layer=logger.per_layer, term_keys=keys,
                                            sparsity_roles=roles, lambdas=lambdas)
            self.metric.on_reset = self._on_reset
            self.switches = {}  # traced with another metric
        # The plain steps: the model's own, or made now, while nothing of ours is on it.
        plain = {}
        for kind in KINDS:
            current = getattr(model, f"{kind}_function", None)
            switch = self.switches.get(kind)
            if switch is None or current is not switch.plain:
                plain[kind] = current if current is not None else make_step_function(model, kind)
        self.attached = True  # from here on, detach() undoes whatever is done
        try:
            self._install()
            for kind, function in plain.items():
                self.switches[kind] = StepSwitch(self, kind, function, make_step_function(model, kind))
            for kind in KINDS:
                setattr(model, f"{kind}_function", self.switches[kind])
        except BaseException:
            self.detach()
            raise
        self.logger = logger
        self._running = _keras.running_call(model)
        self._claims.clear()
        self.metric.reset_state()
        return self.metric

    def _join(self, held: Any, logger: Any) -> PenaltyMetric:
        """A logger of a call nested in the running one (a callback's `evaluate` or `fit`).

        The nested call's steps run logged already (`runs_logged`); its logger
        takes the running metric as it is and leaves the attachment to `held`,
        so the outer call keeps logging after it.
        """
        if logger.per_layer != held.per_layer:
            raise ValueError(
                "A PenaltyLogger in a call nested in a logged fit (an evaluate or fit from a callback) "
                "logs with the running logger's keys; this one asks for per_layer="
                f"{logger.per_layer}, the running one has per_layer={held.per_layer}. Pass "
                f"PenaltyLogger(per_layer={held.per_layer}), or no logger: the nested call is logged anyway."
            )
        return self.metric

    def detach(self, ending_evaluate: bool = False) -> None:
        """Gives the model back exactly what it had: its metrics, compute_loss and step functions.

        `ending_evaluate`: called from the `on_test_end` of the standalone
        `evaluate` the logger runs in. Without `return_dict=True`, Keras
        flattens its logs right after; the penalty keys are left out of that
        list by a one-call `_keras.flatten_results_without(..., once=True)`.
        """
        if not self.attached:
            return
        self._uninstall()
        if ending_evaluate and _keras.returns_flat_results(self._running):
            _keras.flatten_results_without(self.model, self.metric.keys, once=True)
        for kind, switch in self.switches.items():
            if getattr(self.model, f"{kind}_function", None) is switch:
                setattr(self.model, f"{kind}_function", switch.plain)
        self.logger = None
        self._running = None
        self.attached = False
        self._claims.clear()

    def rebuild(self) -> None:
        """New plain and logged steps (the penalties changed), traced at their next call."""
        model = self.model
        if latest_keys(sparsity_roles(model), ()) != tuple(
                k for k in self.metric.latest_keys if k.startswith("sparsity_")):
            warnings.warn(
                "PenaltyLogger: which roles take the proximal step changed during fit; the "
                f"sparsity keys stay those of the fit's start ({list(self.metric.latest_keys)}). "
                "The new ones show from the next fit.",
                stacklevel=4,  # rebuild ← retrace ← regularize ← the caller
            )
        self._uninstall()
        plain = {kind: make_step_function(model, kind) for kind in self.switches}
        self._install()
        for kind, switch in self.switches.items():
            switch.plain, switch.logged, switch.checked = plain[kind], make_step_function(model, kind), False

    def _install(self) -> None:
        """The compute_loss hook and the metric among `model.metrics`."""
        model = self.model
        self._user_compute_loss = vars(model).get("compute_loss", _ABSENT)
        compute_loss = model.compute_loss  # the bound method, overrides included
        has_training_arg = _takes_training(compute_loss)
        metric = self.metric

        def compute_loss_with_penalty_terms(x=None, y=None, y_pred=None, sample_weight=None, training=True):
            with recording_terms() as recorded:
                if has_training_arg:
                    loss = compute_loss(x, y, y_pred, sample_weight, training=training)
                else:
                    loss = compute_loss(x, y, y_pred, sample_weight)
            self._loss_calls += 1
            if loss is not None:
                # Keras divides the loss by the replica count; its loss tracker
                # multiplies it back, and so does this metric.
                metric.add_step(loss * _keras.num_replicas(), _batch_size(x, y_pred), recorded)
            return loss

        object.__setattr__(model, "compute_loss", compute_loss_with_penalty_terms)
        _keras.compute_loss_accepts_training(model, True)
        self._hooked = True
        _keras.add_model_metric(model, metric)
        # A nested evaluate, train_on_batch or test_on_batch returns what it returns without the plugin.
        _keras.flatten_results_without(model, metric.keys)

    def _uninstall(self) -> None:
        model = self.model
        _keras.restore_flat_results(model)
        _keras.remove_model_metric(model, self.metric)
        if self._hooked:
            if self._user_compute_loss is _ABSENT:
                object.__delattr__(model, "compute_loss")
            else:
                object.__setattr__(model, "compute_loss", self._user_compute_loss)
            _keras.compute_loss_accepts_training(model, _takes_training(model.compute_loss))
            self._hooked = False

    # --- per step ----------------------------------------------------------

    def claim(self, kind: str) -> None:
        """The next call of the model's `kind` step function is the logger's."""
        self._claims.add(kind)

    def runs_logged(self, kind: str) -> bool:
        """Whether this call of the `kind` step is the logger's (consumes its claim).

        It is when the logger claimed it, or when the call is nested in the
        logger's running fit/evaluate (an `evaluate` or `train_on_batch` from
        a callback). It is not after that fit raised: the fit is gone.
        """
        if kind in self._claims:
            self._claims.discard(kind)
            return True
        return self._running is not None and _keras.is_running(self._running)

    def metric_state_positions(self) -> list[int]:
        """Where the metric's variables sit in `model.metrics_variables`."""
        ours = {id(v) for v in self.metric.variables}
        return [i for i, v in enumerate(self.model.metrics_variables) if id(v) in ours]

    def check_first_logged_call(self, kind: str, run: Callable[[], Any]) -> Any:
        """Runs a step function's first logged call; an error if it never called compute_loss."""
        before = self._loss_calls
        outputs = run()
        if self._loss_calls == before:
            raise RuntimeError(
                f"PenaltyLogger: {type(self.model).__name__}.{kind}_step never called "
                "compute_loss, so the penalty terms of its loss cannot be logged. Call "
                "`self.compute_loss(x, y, y_pred, sample_weight)` in the step (as Keras's own "
                f"{kind}_step does), or log `keras_l1l2plus.penalty_terms(self)` from it yourself."
            )
        return outputs

    def _on_reset(self) -> None:
        """At every reset of the metric (each epoch, each evaluate): drop stale claims;
        detach if the model was recompiled since (its step functions are no longer ours)."""
        self._claims.clear()
        if self.attached and any(
            getattr(self.model, f"{kind}_function", None) is not switch for kind, switch in self.switches.items()
        ):
            self.detach()


def latest_keys(roles: Iterable[str], terms: Iterable[str]) -> tuple[str, ...]:
    """The keys `PenaltyMetric` logs at the latest step's value: `sparsity_<role>`, then `lambda_<term>`."""
    return (*(f"sparsity_{role}" for role in roles), *(f"lambda_{term}" for term in terms))


def sparsity_roles(model: Any) -> tuple[str, ...]:
    """The roles whose `sparsity_*` means something: those that take the proximal step.

    With subgradient steps no entry is brought to exactly 0 (only one that
    never left an exact-zero initial value stays there), and without a
    `ProximalOptimizer` the proximal regularizers' L1 does not act at all.
    """
    return proximal_roles(model) if uses_proximal_step(getattr(model, "optimizer", None)) else ()


def _takes_training(compute_loss: Callable) -> bool:
    return "training" in inspect.signature(compute_loss).parameters


def attachment(model: Any) -> Attachment:
    """The model's `Attachment`, created on first use (kept on the model, untracked by Keras)."""
    found = vars(model).get(_ATTRIBUTE)
    if found is None:
        found = Attachment(model)
        object.__setattr__(model, _ATTRIBUTE, found)
    return found
