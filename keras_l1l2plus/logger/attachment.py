"""`Attachment`: a `PenaltyLogger`'s hold on a model, and the one state machine of the logger.

While attached, the model's `compute_loss` records the terms of each step's
loss into a `metric.PenaltyMetric`, the metric is among `model.metrics` (so
its values are in the logs Keras hands to every callback, whatever their
order), the model's step functions are `StepSwitch`es between a logged and a
plain traced step, and `evaluate`, `train_on_batch` and `test_on_batch`
flatten their results without the penalty keys (they return what Keras
returns; `return_dict=True` shows the terms).

States of one model's attachment, and what moves it (Keras gives callbacks
no `finally`: every transition out of "attached" must also happen without
`on_train_end`, which Keras skips when `fit` raises):

    state        what is on the model
    DETACHED     nothing (the traced steps are kept, inert, for the next logged fit)
    ATTACHED     hook, metric, switches, flatten filter; held by one logger, for the
                 fit or evaluate it runs in (`running`: that call's frame)

    event (Keras's)                                   from        to / what happens
    logger.on_train_begin / standalone on_test_begin  DETACHED    ATTACHED (attach)
                                                      ATTACHED    the holder's call is still running and
                                                                  this is another logger (a callback's
                                                                  nested evaluate/fit): JOIN, it logs
                                                                  with the running metric, the holder
                                                                  keeps the attachment; otherwise the
                                                                  stale attachment is DETACHED first
    logger.on_*_batch_begin (holder)                  ATTACHED    claims the next step: it runs logged
    a step called nested in the running call          ATTACHED    runs logged (a callback's evaluate,
                                                                  train_on_batch, test_on_batch)
    a step neither claimed nor nested                 ATTACHED    DETACHED, and runs plain (HEAL: a
                                                                  later fit after one that raised)
    metric reset after a recompile (foreign steps)    ATTACHED    DETACHED (HEAL)
    `regularize` during the fit                       ATTACHED    ATTACHED, both steps traced anew
    logger.on_train_end / standalone on_test_end      ATTACHED    DETACHED (a standalone evaluate leaves a
                                                                  one-call flatten filter for its return)

`tests/test_metrics.py` takes each transition. A `fit` that raises
therefore leaves nothing that a later `fit`, `evaluate` or `train_on_batch`
would run.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

from keras_l1l2plus import _keras
from keras_l1l2plus.logger.metric import PenaltyMetric, batch_size, counts_live_groups, latest_keys, sparsity_roles
from keras_l1l2plus.regularizer import recording_terms
from keras_l1l2plus.schedule import lambda_variables
from keras_l1l2plus.steps import KINDS, make_step_function
from keras_l1l2plus.terms import penalty_sums

__all__ = ["Attachment", "StepSwitch", "attachment"]


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
        self._user_compute_loss: Any = None  # what _keras.unhook_compute_loss puts back
        self._loss_calls = 0

    # --- attach / detach -------------------------------------------------

    def attach(self, logger: Any) -> PenaltyMetric:
        """Makes `model`'s steps compute the terms, for `logger`'s fit or evaluate."""
        if self.attached:
            held = self.logger
            if held is not None and held is not logger and _keras.same_call(held, logger):
                raise ValueError(
                    "Two PenaltyLogger callbacks in one call of fit/evaluate: pass one. "
                    f"Received: {held!r} and {logger!r}"
                )
            if held is not None and _keras.is_running(self._running):
                if held is logger:  # the logger of the running fit, given again to a call nested in it
                    raise ValueError(
                        "This PenaltyLogger is logging the running fit; a call nested in it (from a "
                        "callback) is logged with it anyway. Pass it no logger, or a new "
                        f"PenaltyLogger(per_layer={logger.per_layer}). Received: {logger!r}"
                    )
                return self._join(held, logger)
            self.detach()  # left by a call that raised, or by this logger
        model = self.model
        keys = penalty_sums(model, per_layer=logger.per_layer).keys
        roles = sparsity_roles(model)
        lambdas = lambda_variables(model)
        groups = counts_live_groups(model)
        if (
            self.metric is None
            or self.metric.keys != (*keys, "data_loss", *latest_keys(roles, lambdas, groups))
            or self.metric.lambda_ids != tuple(id(v) for v in lambdas.values())
        ):
            with _keras.distribution_scope(model):
                self.metric = PenaltyMetric(
                    model,
                    per_layer=logger.per_layer,
                    term_keys=keys,
                    sparsity_roles=roles,
                    lambdas=lambdas,
                    live_groups=groups,
                )
            self.metric.on_reset = self._on_reset
            self.switches = {}  # traced with another metric
        # The plain steps: the model's own, or made now, while nothing of ours is on it.
        plain = {}
        for kind in KINDS:
            current = _keras.step_function(model, kind)
            switch = self.switches.get(kind)
            if switch is None or current is not switch.plain:
                plain[kind] = current if current is not None else make_step_function(model, kind)
        self.attached = True  # from here on, detach() undoes whatever is done
        try:
            self._install()
            for kind, function in plain.items():
                self.switches[kind] = StepSwitch(self, kind, function, make_step_function(model, kind))
            for kind in KINDS:
                _keras.set_step_function(model, kind, self.switches[kind])
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
            if _keras.step_function(self.model, kind) is switch:
                _keras.set_step_function(self.model, kind, switch.plain)
        self.logger = None
        self._running = None
        self.attached = False
        self._claims.clear()

    def rebuild(self) -> None:
        """New plain and logged steps (the penalties changed), traced at their next call."""
        model = self.model
        if latest_keys(sparsity_roles(model), ()) != tuple(
            k for k in self.metric.latest_keys if k.startswith("sparsity_")
        ):
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
        metric = self.metric

        def hook(compute_loss, has_training_arg):
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
                    replicas = _keras.num_replicas()  # no op made for the one replica of most runs
                    metric.add_step(loss if replicas == 1 else loss * replicas, batch_size(x, y_pred), recorded)
                return loss

            return compute_loss_with_penalty_terms

        self._user_compute_loss = _keras.hook_compute_loss(model, hook)
        self._hooked = True
        _keras.add_model_metric(model, metric)
        # A nested evaluate, train_on_batch or test_on_batch returns what it returns without the plugin.
        _keras.flatten_results_without(model, metric.keys)

    def _uninstall(self) -> None:
        model = self.model
        _keras.restore_flat_results(model)
        _keras.remove_model_metric(model, self.metric)
        if self._hooked:
            _keras.unhook_compute_loss(model, self._user_compute_loss)
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
            _keras.step_function(self.model, kind) is not switch for kind, switch in self.switches.items()
        ):
            self.detach()


def attachment(model: Any) -> Attachment:
    """The model's `Attachment`, created on first use (kept on the model, untracked by Keras)."""
    return _keras.model_state(model, "attachment", lambda: Attachment(model))


class StepSwitch:
    """`model.<kind>_function` while a logger is attached: the logged step when it is the logger's.

    `attachment` (an `Attachment`) decides: `runs_logged(kind)`,
    `detach()`, `metric_state_positions()`, `check_first_logged_call(kind, run)`.
    """

    def __init__(self, attachment: Any, kind: str, plain: Callable, logged: Callable):
        self.attachment = attachment
        self.kind = kind
        self.plain = plain
        self.logged = logged
        self.checked = False  # the logged step is known to call compute_loss

    def rebuild_steps(self) -> None:
        """What `steps.retrace` calls: the penalties changed, both steps of every switch are made anew."""
        self.attachment.rebuild()

    def __call__(self, *args, **kwargs):
        attachment = self.attachment
        if attachment.runs_logged(self.kind):
            if self.checked:
                return self.logged(*args, **kwargs)
            outputs = attachment.check_first_logged_call(self.kind, lambda: self.logged(*args, **kwargs))
            self.checked = True
            return outputs
        # No logger runs this step (a fit that raised left the switch behind).
        positions = attachment.metric_state_positions()
        attachment.detach()
        return self.plain(*_keras.without_metric_state(args, positions), **kwargs)
