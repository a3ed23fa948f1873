"""A regularization factor λ: argument validation, and the one type of a λ the step reads.

A λ is a finite, non-negative float, or a `LambdaEntry`: entry i of the
model's λ vector, a variable `PenaltySchedule` writes and the train step
reads (see `keras_l1l2plus.schedule`). The helpers below read either kind.
The validators name the argument and show the value, as Keras's do.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import keras
import numpy as np
from keras import ops

__all__ = [
    "LambdaEntry",
    "factor_is_zero",
    "factor_tensor",
    "factor_value",
    "is_factor_variable",
    "validate_flag",
    "validate_penalty",
    "validate_zero_grad",
]


def _as_float(value: Any, name: str) -> float:
    """`value` as a Python float, or a `ValueError` naming `name`.

    `None` means 0.0 (as in Keras). Python and numpy reals and 0-d tensors are
    accepted; bools, strings, sequences and non-scalar tensors are not.
    """
    if value is None:
        return 0.0
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(
            f"Invalid value for argument `{name}`: expected a float, got a bool. Received: {name}={value!r}"
        )
    if isinstance(value, numbers.Real):
        try:
            return float(value)
        except OverflowError:  # an int beyond float range
            return math.inf
    if hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, str):
        array = ops.convert_to_numpy(value)
        if array.ndim == 0 and array.dtype.kind in "fiu":
            return float(array)
    raise ValueError(f"Invalid value for argument `{name}`: expected a float. Received: {name}={value!r}")


class LambdaEntry:
    """Entry `index` of the vector variable that holds a model's scheduled λs (see `PenaltySchedule`).

    One vector per model, so a schedule assigns all its λs with one write
    per step; a regularizer reads its entry in the step.
    """

    def __init__(self, variable: Any, index: int, value: float):
        self.variable = variable
        self.index = index
        self.value = value  # the Python float last written: what get_config saves

    def read(self, vector: Any = None) -> Any:
        """The entry's value in the step: of the λ vector, or of `vector`, a copy of it."""
        return (self.variable if vector is None else vector)[self.index]

    def __repr__(self) -> str:
        return f"LambdaEntry({self.variable.name}[{self.index}] = {self.value:g})"


def is_factor_variable(value: Any) -> bool:
    """Whether a λ is read from the model's λ vector at each step (a `LambdaEntry`)."""
    return isinstance(value, LambdaEntry)


def factor_is_zero(value: Any) -> bool:
    """Whether a λ is the constant 0 (a term that is not computed). A variable λ never is."""
    return not is_factor_variable(value) and value == 0


def factor_tensor(value: Any) -> Any:
    """A λ as the step reads it: the float, or the variable's current value."""
    return value.read() if isinstance(value, LambdaEntry) else value


def factor_value(value: Any) -> float:
    """A λ's value now, as a Python float."""
    return value.value if is_factor_variable(value) else value


def validate_penalty(value: Any, name: str) -> Any:
    """A regularization factor λ: a finite, non-negative float (or the `LambdaEntry` of a schedule)."""
    if isinstance(value, LambdaEntry):
        return value
    if callable(value) or isinstance(value, keras.Variable):
        # PenaltySchedule's keywords are regularize's: l1_weight, l1_bias, l2_weight, l2_bias.
        schedule = (
            (
                f"keras_l1l2plus.PenaltySchedule({name}_weight=...) for weights or "
                f"PenaltySchedule({name}_bias=...) for biases"
            )
            if name in ("l1", "l2")
            else f"keras_l1l2plus.PenaltySchedule({name}=...)"
        )
        raise ValueError(
            f"Invalid value for argument `{name}`: expected a float; to make a λ follow a schedule, "
            f"pass the schedule to the callback {schedule}. Received: {name}={value!r}"
        )
    value = _as_float(value, name)
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected a finite, non-negative float. Received: {name}={value!r}"
        )
    return value


def validate_zero_grad(value: Any, name: str = "zero_grad") -> float:
    """The L1 gradient at x = 0: a float in [-1, 1], the subdifferential of |x|."""
    value = _as_float(value, name)
    if not -1.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(
            f"Invalid value for argument `{name}`: expected a float in "
            f"[-1, 1] (the subdifferential of |x| at 0). Received: {name}={value!r}"
        )
    return value


def validate_flag(value: Any, name: str) -> bool:
    """A Python (or numpy) bool, or a `TypeError` naming `name`."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"Invalid value for argument `{name}`: expected a bool. Received: {name}={value!r}")
    return bool(value)
