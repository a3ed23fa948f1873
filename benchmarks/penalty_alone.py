"""The penalty's own cost: value and gradient of Σ reg(w) over a model's variables, nothing else.

    KERAS_BACKEND=torch python benchmarks/penalty_alone.py [--rounds 15]

The train-step rows of `run.py` carry the whole step's noise; this times the
regularizers alone, on the variables of the models the step rows use, in
the way Keras runs the backend by default (TensorFlow: `tf.function`
without XLA; JAX: `jax.jit`; PyTorch: eager), Keras's `L1L2` and
`L1L2Plus` interleaved, 10 calls per sample. The ratio is taken per round;
the table gives its median and spread, with an A/A row (Keras's `L1L2`
again).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_l1l2plus as kl  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BACKEND, LAMBDAS, width_for  # noqa: E402

H10 = width_for(10_000_000)
MODELS = {
    "MLP 784-512-512-10": [(784, 512), (512,), (512, 512), (512,), (512, 10), (10,)],
    f"MLP 784-{H10}-{H10}-10": [(784, H10), (H10,), (H10, H10), (H10,), (H10, 10), (10,)],
    "50 × Dense(64)": [(784, 64), (64,), *[(64, 64), (64,)] * 49, (64, 10), (10,)],
}


def value_and_gradients(regularizer, variables):
    """A function computing Σ regularizer(v) and its gradient w.r.t. every variable, the backend's default way."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = keras.ops.sum(keras.ops.stack([regularizer(v) for v in variables]))
            return loss, tape.gradient(loss, variables)

        return step
    if BACKEND == "jax":
        import jax

        def total(values):
            return keras.ops.sum(keras.ops.stack([regularizer(v) for v in values]))

        step = jax.jit(jax.value_and_grad(total))
        return lambda: step([v.value for v in variables])

    def step():
        for v in variables:
            v.value.grad = None
        loss = keras.ops.sum(keras.ops.stack([regularizer(v) for v in variables]))
        loss.backward()
        return loss, [v.value.grad for v in variables]

    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    print(f"Keras {keras.__version__} on {BACKEND}, keras-l1l2plus {kl.__version__}; "
          f"l1 = {LAMBDAS['l1']}, l2 = {LAMBDAS['l2']}; {args.rounds} rounds of 10 calls\n")
    print("| variables of | regularizer | CPU ms per call (median) | CPU-time ratio to Keras L1L2, median (min–max) "
          "| wall-time ratio, median |\n|---|---|---:|---|---:|")
    for label, shapes in MODELS.items():
        rng = np.random.default_rng(0)
        variables = [keras.Variable(rng.normal(size=s).astype("float32")) for s in shapes]
        contenders = {
            "Keras L1L2": keras.regularizers.L1L2(**LAMBDAS),
            "Keras L1L2, again (A/A)": keras.regularizers.L1L2(**LAMBDAS),
            "L1L2Plus": kl.L1L2Plus(**LAMBDAS),
        }
        steps = {name: value_and_gradients(reg, variables) for name, reg in contenders.items()}
        times = {name: [] for name in steps}
        for step in steps.values():
            step()  # trace
        for _ in range(args.rounds):
            for name, step in steps.items():
                start = time.process_time(), time.perf_counter()
                for _ in range(10):
                    out = step()
                keras.ops.convert_to_numpy(out[0])  # synchronise
                times[name].append(((time.process_time() - start[0]) * 100, (time.perf_counter() - start[1]) * 100))
        base = times["Keras L1L2"]
        for name, values in times.items():
            cpu = [a[0] / b[0] for a, b in zip(values, base)]
            wall = statistics.median(a[1] / b[1] for a, b in zip(values, base))
            print(f"| {label} | {name} | {statistics.median(v[0] for v in values):.3f} "
                  f"| {statistics.median(cpu):.3f} ({min(cpu):.3f}–{max(cpu):.3f}) | {wall:.3f} |")


if __name__ == "__main__":
    main()
