"""A model's compiled step functions: retraced through public API, or switched per step.

Keras traces `train_step` and `test_step` once and caches the results as
`model.train_function` and `model.test_function`. Two things here:

- `retrace(model)`: a penalty changed after tracing (by `regularize`) reaches
  the step only once it is traced again; `make_*_function(force=True)`
  rebuilds it, so the next step uses the new penalty, mid-`fit` included.
- `StepSwitch`: while a `PenaltyLogger` is attached, the model's step
  function is a switch between two cached steps, the logged one and the
  plain one. A step runs logged when the logger claimed it (in its
  `on_*_batch_begin`, just before Keras calls the step) or is nested in the
  logger's running `fit` (an `evaluate` from a callback); any other call,
  such as the first step of a later `fit` after one that raised, detaches
  the logger and runs the plain step. Repeated fits reuse both.
"""

from __future__ import annotations

from typing import Any, Callable

from keras_l1l2plus import _keras

__all__ = ["KINDS", "StepSwitch", "make_step_function", "retrace"]

KINDS = ("train", "test")


def make_step_function(model: Any, kind: str) -> Callable:
    """A new, not yet traced, step function of `kind`, leaving the model's own in place.

    Public `make_*_function(force=True)`; what it builds depends on the model
    as it is now (on JAX, its metrics' variables fix the step's state layout).
    """
    previous = getattr(model, f"{kind}_function")
    try:
        getattr(model, f"make_{kind}_function")(force=True)  # returns None on some backends
        return getattr(model, f"{kind}_function")
    finally:
        setattr(model, f"{kind}_function", previous)


class StepSwitch:
    """`model.<kind>_function` while a logger is attached: the logged step when it is the logger's.

    `attachment` (a `metrics.Attachment`) decides: `runs_logged(kind)`,
    `detach()`, `metric_state_positions()`, `check_first_logged_call(kind, run)`.
    """

    def __init__(self, attachment: Any, kind: str, plain: Callable, logged: Callable):
        self.attachment = attachment
        self.kind = kind
        self.plain = plain
        self.logged = logged
        self.checked = False  # the logged step is known to call compute_loss

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


def retrace(model: Any) -> None:
    """Makes the model's next train and test steps use its current penalties.

    Public API only (`make_train_function(force=True)`); switches in place
    are rebuilt by their attachment and kept. Functions never built are left
    to Keras.
    """
    switches = [f for f in (getattr(model, f"{k}_function", None) for k in KINDS) if isinstance(f, StepSwitch)]
    if switches:
        switches[0].attachment.rebuild()
    for kind in KINDS:
        function = getattr(model, f"{kind}_function", None)
        if function is not None and not isinstance(function, StepSwitch):
            getattr(model, f"make_{kind}_function")(force=True)
