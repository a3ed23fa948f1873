"""A model's compiled step functions, dropped so that the next use traces anew.

Keras traces `train_step` and `test_step` once and caches the result as
`model.train_function` and `model.test_function`. A penalty, metric or
constraint installed afterwards is in the traced step only once they are
rebuilt; setting them to None makes `fit`, `evaluate` and `predict` rebuild
them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["drop_step_functions"]


def drop_step_functions(model: Any) -> None:
    """Makes the model's next fit/evaluate/predict trace its step again."""
    for name in ("train_function", "test_function", "predict_function"):
        if getattr(model, name, None) is not None:
            setattr(model, name, None)
