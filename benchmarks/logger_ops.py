"""Ops a logged train step adds to the plain one, on TensorFlow (graph nodes) and PyTorch (ATen ops).

    KERAS_BACKEND=torch python benchmarks/logger_ops.py

The same model's `train_step`, traced (TensorFlow) or run once under a
dispatch counter (PyTorch), with and without a `PenaltyLogger` attached:
the difference is what the logger adds per step. JAX is left out: XLA
fuses the logger's scalar work into the step's kernels.
"""

from __future__ import annotations

import collections
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_l1l2plus as kl  # noqa: E402
from keras_l1l2plus.logger import attachment as metrics  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from op_count import dispatched_ops, graph_ops  # noqa: E402
from run import BACKEND, mlp  # noqa: E402


def ops_per_train_step(model, x, y) -> collections.Counter:
    """Op types of one `train_step` of `model`, with their counts."""
    step = lambda x, y: model.train_step((x, y))  # noqa: E731
    if BACKEND == "tensorflow":
        return graph_ops(step, x, y)
    return dispatched_ops(step, keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y))


def logger_ops(widths, kind):
    """`(variables, plain ops, logged ops, Counter of the added op types)`."""
    keras.utils.set_random_seed(0)
    model = mlp(widths, kind)()
    x = np.random.default_rng(0).normal(size=(128, widths[0])).astype("float32")
    y = np.zeros(128, "int64")
    model.fit(x, y, batch_size=128, epochs=1, verbose=0)
    plain = ops_per_train_step(model, x, y)
    logger = kl.PenaltyLogger()
    logger.set_model(model)
    attachment = metrics.attachment(model)
    attachment.attach(logger)
    try:
        logged = ops_per_train_step(model, x, y)
    finally:
        attachment.detach()
    return len(model.trainable_weights), sum(plain.values()), sum(logged.values()), logged - plain


def main():
    print(f"Keras {keras.__version__} on {BACKEND}, keras-l1l2plus {kl.__version__}\n")
    print("| model | regularizers | variables | ops per plain step | added by the logger | added op types |\n"
          "|---|---|---:|---:|---:|---|")
    for label, widths in (("MLP 784-110-110-10", (784, 110, 110, 10)), ("50 × Dense(64)", (784, *[64] * 50, 10))):
        for kind in ("plus", "proximal"):
            n, plain, logged, added = logger_ops(widths, kind)
            top = ", ".join(f"{op} {k}" for op, k in added.most_common(6))
            print(f"| {label} | {'L1L2Plus(proximal=True) + ProximalOptimizer' if kind == 'proximal' else 'L1L2Plus'} "
                  f"| {n} | {plain} | {logged - plain} | {top} |")


if __name__ == "__main__":
    main()
