"""A model's compiled step functions, made anew through public API.

Keras traces `train_step` and `test_step` once and caches the results as
`model.train_function` and `model.test_function`. A penalty changed after
tracing (by `regularize`, or a `PenaltySchedule` taking a λ) reaches the step
only once it is traced again: `retrace(model)` rebuilds it with
`make_*_function(force=True)`, so the next step uses the new penalty,
mid-`fit` included. A step function with a `rebuild_steps()` method (a
`PenaltyLogger`'s switch, `keras_l1l2plus.logger.attachment.StepSwitch`) is
asked to rebuild itself instead, and stays in place.
"""

from __future__ import annotations

from typing import Any, Callable

from keras_l1l2plus import _keras

__all__ = ["KINDS", "make_step_function", "retrace"]

KINDS = ("train", "test")


def make_step_function(model: Any, kind: str) -> Callable:
    """A new, not yet traced, step function of `kind`, leaving the model's own in place.

    Public `make_*_function(force=True)`; what it builds depends on the model
    as it is now (on JAX, its metrics' variables fix the step's state layout).
    """
    previous = _keras.step_function(model, kind)
    try:
        getattr(model, f"make_{kind}_function")(force=True)  # returns None on some backends
        return _keras.step_function(model, kind)
    finally:
        _keras.set_step_function(model, kind, previous)


def retrace(model: Any) -> None:
    """Makes the model's next train and test steps use its current penalties.

    Public API only (`make_train_function(force=True)`); a logger's switches
    in place are rebuilt by their attachment and kept. Functions never built
    are left to Keras.
    """
    functions = [_keras.step_function(model, kind) for kind in KINDS]
    switches = [f for f in functions if hasattr(f, "rebuild_steps")]  # a PenaltyLogger's (logger.attachment)
    if switches:
        switches[0].rebuild_steps()
    for kind, function in zip(KINDS, functions):
        if function is not None and not hasattr(function, "rebuild_steps"):
            getattr(model, f"make_{kind}_function")(force=True)
