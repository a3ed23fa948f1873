"""Inference time of a shrunk model against the original, side by side, in one process.

    KERAS_BACKEND=jax python benchmarks/shrink_inference.py [--quick] [--rounds N] [--out FILE]

The model is the showcase of `examples/shrink_digits.py`: the digits MLP
trained with the group lasso and the proximal step, then `kl.shrink`.
Its accuracy, parameters and multiply-adds come from the example; this
script times the two models' forward passes at batch 1 and 256.

Two ways to call a model are timed:

- `predict_on_batch(x)`: Keras's own compiled predict step (a `tf.function`
  on TensorFlow, `jax.jit` on JAX, eager PyTorch under `no_grad`), with its
  per-call overhead, which dominates at batch 1;
- the forward pass alone, compiled the backend's way: `tf.function(model)`,
  `jax.jit` of `model.stateless_call`, PyTorch `model(x)` under `no_grad`.

Method: both models (and the original a second time: the A/A row, the
machine's noise) are warmed up, then rounds interleave them (A, A', B, A,
A', B, ...); in a round each contender runs `calls` calls, timed with the
wall clock and the process's CPU time (both threads); the table shows the
median ratio to the original over the rounds and its min–max. The result
of each call is read back (`convert_to_numpy` of the last one), so the
device is synchronised.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

BACKEND = keras.backend.backend()


def forward(model):
    """The model's forward pass, compiled the backend's way (see the module docstring)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        call = tf.function(lambda x: model(x, training=False))
        return lambda x: call(x)
    if BACKEND == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        frozen = [v.value for v in model.non_trainable_variables]
        call = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=False)[0])
        return lambda x: call(trainable, frozen, x)
    import torch

    def call(x):
        with torch.no_grad():
            return model(x, training=False)

    return call


def timed(fn, x, calls):
    """Wall and CPU seconds per call of `calls` calls of fn(x), the last result read back."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        out = fn(x)
    keras.ops.convert_to_numpy(out)
    return (time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls


def measure(original, small, select, batch, rounds, calls, way):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, *original.input_shape[1:])).astype("float32")
    xs = select(x)
    if way == "predict_on_batch":
        fns = {"original": original.predict_on_batch, "original (A/A)": original.predict_on_batch,
               "shrunk": small.predict_on_batch}
    else:
        fns = {"original": forward(original), "original (A/A)": forward(original), "shrunk": forward(small)}
    inputs = {"original": x, "original (A/A)": x, "shrunk": xs}
    for name, fn in fns.items():  # warm-up: trace and compile
        timed(fn, inputs[name], 3)
    per_round = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            per_round[name].append(timed(fn, inputs[name], calls))
    rows = []
    base = per_round["original"]
    for name in fns:
        series = per_round[name]
        wall = [s[0] / b[0] for s, b in zip(series, base)]
        cpu = [s[1] / b[1] for s, b in zip(series, base)]
        rows.append((way, batch, name, 1e6 * statistics.median(s[0] for s in series),
                     statistics.median(wall), min(wall), max(wall), statistics.median(cpu), min(cpu), max(cpu)))
    return rows


def showcase(quick):
    """The example's trained original, its shrunk model, the report and the accuracies."""
    import shrink_digits

    return shrink_digits.showcase(fast=quick)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short training and few rounds: checks the script")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the markdown here too")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 7)
    result = showcase(args.quick)
    original, small, report = result["original"], result["small"], result["report"]
    rows = []
    for way in ("forward", "predict_on_batch"):
        for batch in (1, 256):
            calls = (20 if args.quick else 300) if batch == 1 else (5 if args.quick else 100)
            rows += measure(original, small, report.select_features, batch, rounds, calls, way)
    totals = report.totals()
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}, Keras "
        f"{keras.__version__} on {BACKEND}; {rounds} rounds",
        "",
        f"Model: {result['description']}",
        f"Parameters {totals['params_before']:,} → {totals['params_after']:,} "
        f"({totals['params_before'] / totals['params_after']:.2f}× fewer); multiply-adds per example "
        f"{totals['macs_before']:,} → {totals['macs_after']:,} ({totals['macs_before'] / totals['macs_after']:.2f}×); "
        f"test accuracy {result['accuracy_original']:.4f} (original) = {result['accuracy_small']:.4f} (shrunk); "
        f"control without the group term {result['accuracy_control']:.4f}",
        "",
        "| call | batch | model | µs per call (median) | time / original, wall (min–max) | CPU (min–max) |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for way, batch, name, us, w, wlo, whi, c, clo, chi in rows:
        lines.append(f"| {way} | {batch} | {name} | {us:.0f} | {w:.3f} ({wlo:.3f}–{whi:.3f}) | "
                     f"{c:.3f} ({clo:.3f}–{chi:.3f}) |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
