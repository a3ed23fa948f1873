"""Warm starts with and without the optimizer's state: `regularization_path(reset_optimizer=...)`.

    KERAS_BACKEND=jax python benchmarks/path_reset.py [--seeds 3] [--out FILE]

The digits MLP of `examples/path_digits.py`, 64-128-64-10 with the group
lasso on its hidden units and `ProximalOptimizer(Adam(1e-3))` (Adam's
moments and step count are the state that carries over or not), along
8 λs from 1e-3 up to 0.1 (`direction="increasing"`), 10 epochs per λ. For
each seed, each λ: the validation data loss and accuracy and the live
units, with the optimizer's state carried over (default) and reset to the
path's start at each λ. Not a timing: the two cost the same.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_l1l2plus as kl  # noqa: E402

LAMBDAS = list(np.geomspace(1e-3, 0.1, 8))


def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x_train, x_val, y_train, y_val = train_test_split(data.data, data.target, test_size=0.25, random_state=0,
                                                      stratify=data.target)
    mean, std = x_train.mean(0), x_train.std(0)
    std[std == 0] = 1.0
    return ((x_train - mean) / std).astype("float32"), y_train, ((x_val - mean) / std).astype("float32"), y_val


def run(reset, seed, data):
    x, y, x_val, y_val = data
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(128, activation="relu", name="h1"),
                              keras.layers.Dense(64, activation="relu", name="h2"),
                              keras.layers.Dense(10, activation="softmax", name="output")])
    kl.regularize(model, l2_weight=1e-4, group_weight=1e-3, groups="units", proximal_weight=True, exclude="output")
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.Adam(1e-3)),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    path = kl.regularization_path(model, x, y, lambdas=LAMBDAS, direction="increasing", epochs=10, batch_size=64,
                                  validation_data=(x_val, y_val), reset_optimizer=reset, verbose=0)
    return path.values("val_data_loss"), path.values("val_accuracy"), path.values("live_groups")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    data = digits()
    lines = [f"Keras {keras.__version__} on {keras.backend.backend()}; digits MLP 64-128-64-10, group lasso on "
             "the hidden units, ProximalOptimizer(Adam(1e-3)), 8 λs from 1e-3 to 0.1 up, 10 epochs each", "",
             "| seed | λ | val_data_loss carried | reset | val_accuracy carried | reset | live units carried | reset |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    wins = 0
    for seed in range(args.seeds):
        carried, reset = run(False, seed, data), run(True, seed, data)
        for i, lam in enumerate(LAMBDAS):
            lines.append(f"| {seed} | {lam:.3g} | {carried[0][i]:.4f} | {reset[0][i]:.4f} | {carried[1][i]:.4f} | "
                         f"{reset[1][i]:.4f} | {int(carried[2][i])} | {int(reset[2][i])} |")
            wins += carried[0][i] <= reset[0][i]
    lines += ["", f"carried state: lower or equal validation data loss at {wins} of {args.seeds * len(LAMBDAS)} "
              "(seed, λ) points"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
