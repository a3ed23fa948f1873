"""A model's compiled step functions: retraced through public API, or switched per step.

Keras traces `train_step` and `test_step` once and caches the results as
`model.train_function` and `model.test_function`. Two things here:

- `retrace(model)`: a penalty changed after tracing (by `regularize`) reaches
  the step only once it is traced again; `make_*_function(force=True)`
  rebuilds it, so the next step uses the new penalty, mid-`fit` included.
- `StepSwitch`: while a `PenaltyLogger` is attached, the model's step
  function is a switch between two cached traced steps, the logged one and
  the plain one. A step runs logged only when the logger has claimed it (in
  its `on_*_batch_begin`, just before Keras calls the step); any other call,
  such as the first step of a later `fit` after one that raised, detaches
  the logger and runs the plain step. Repeated fits reuse both traces.
"""

from __future__ import annotations

from typing import Any, Callable

from keras_l1l2plus import _keras

__all__ = ["KINDS", "StepSwitch", "retrace"]

KINDS = ("train", "test")


def _make(model: Any, kind: str) -> Callable:
    """A new, not yet traced, step function of `kind` (public `make_*_function`)."""
    previous = getattr(model, f"{kind}_function")
    getattr(model, f"make_{kind}_function")(force=True)  # returns None on some backends
    function = getattr(model, f"{kind}_function")
    setattr(model, f"{kind}_function", previous)
    return function


class StepSwitch:
    """`model.<kind>_function` while a logger is attached: logged step if claimed, else heal.

    `owner` provides `claimed(kind) -> bool` (consumes the claim), `detach()`,
    `metric_state_positions()` and `check_first_logged_call(kind, run)`.
    """

    def __init__(self, owner: Any, model: Any, kind: str, plain: Callable | None):
        self.owner = owner
        self.kind = kind
        self.plain = plain if plain is not None else _make(model, kind)
        self.logged = _make(model, kind)
        self.checked = False

    def rebuild(self, model: Any) -> None:
        """New plain and logged functions (traced at their first call)."""
        self.plain = _make(model, self.kind)
        self.logged = _make(model, self.kind)
        self.checked = False

    def __call__(self, *args, **kwargs):
        if self.owner.claimed(self.kind):
            if self.checked:
                return self.logged(*args, **kwargs)
            self.checked = True
            return self.owner.check_first_logged_call(self.kind, lambda: self.logged(*args, **kwargs))
        # Not claimed: no logger runs this step (a fit that raised left the
        # switch behind). Detach and run the plain step.
        positions = self.owner.metric_state_positions()
        self.owner.detach()
        return self.plain(*_keras.without_metric_state(args, positions), **kwargs)


def retrace(model: Any) -> None:
    """Makes the model's next train and test steps use its current penalties.

    Public API only (`make_train_function(force=True)`); a `StepSwitch` in
    place is rebuilt and kept. Functions never built are left to Keras.
    """
    for kind in KINDS:
        function = getattr(model, f"{kind}_function", None)
        if isinstance(function, StepSwitch):
            function.rebuild(model)
        elif function is not None:
            getattr(model, f"make_{kind}_function")(force=True)
