"""A regularization factor λ: argument validation, and the one type of a λ the step reads.

A λ given by a user is a finite, non-negative float; inside the package
every λ is a `Factor`: that float, or entry i of the model's λ vector, a
variable `PenaltySchedule` writes and the train step reads (see
`keras_l1l2plus.schedule`), with one way to read either. The validators name
the argument and show the value, as Keras's do.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import keras
import numpy as np
from keras import ops

__all__ = [
    "Factor",
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


class Factor:
    """A λ, the one type of every factor: its value now, and how the train step reads it.

        value     the λ of the moment, a Python float: what `get_config` saves
        read()    what the step multiplies by: the float itself for a constant λ
                  (folded into the traced step), or entry `index` of the model's λ
                  vector for a scheduled one (a variable read at every step, so a new
                  λ needs no new trace; `PenaltySchedule` writes it and `value`)

    A constant λ of 0 is a term that is not computed (`is_zero`); a scheduled
    λ never is, whatever its value now.
    """

    __slots__ = ("index", "value", "variable")

    def __init__(self, value: float, variable: Any = None, index: int = 0):
        self.value = value
        self.variable = variable
        self.index = index

    @property
    def scheduled(self) -> bool:
        """Whether the step reads this λ from the model's λ vector."""
        return self.variable is not None

    @property
    def is_zero(self) -> bool:
        """Whether this λ is the constant 0."""
        return self.variable is None and self.value == 0

    def read(self, vector: Any = None) -> Any:
        """The λ as the step reads it: the float, or the vector's entry (of `vector`, a copy of it, if given)."""
        if self.variable is None:
            return self.value
        return (self.variable if vector is None else vector)[self.index]

    def __repr__(self) -> str:
        if self.variable is None:
            return f"Factor({self.value:g})"
        return f"Factor({self.variable.name}[{self.index}] = {self.value:g})"


def validate_penalty(value: Any, name: str) -> float:
    """A regularization factor λ: a finite, non-negative float."""
    if callable(value) or isinstance(value, keras.Variable):
        # PenaltySchedule's keywords are regularize's: l1_weight, l1_bias, l2_weight, l2_bias, group_weight, ...
        schedule = (
            (
                f"keras_l1l2plus.PenaltySchedule({name}_weight=...) for weights or "
                f"PenaltySchedule({name}_bias=...) for biases"
            )
            if name in ("l1", "l2", "group")
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
