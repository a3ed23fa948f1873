"""Group lasso, then `shrink`: a smaller digits model with the same predictions.

    python examples/shrink_digits.py [--group-weight λ] [--epochs N] [--lambdas λ,λ,...]
                                     [--cnn] [--seed S] [--fast]

Trains a model on scikit-learn's bundled 8×8 digits (standardized, a fixed
stratified 80/20 train/test split) with the group lasso on its units,
`kl.regularize(model, group_weight=λ, groups="units", proximal_weight=True)`
and `ProximalOptimizer(Adam)`: the proximal step sets whole kernel columns
(units, filters) exactly to 0. `kl.shrink(model, x_test)` then removes them
and returns an ordinary, smaller Keras model whose outputs are the
original's; the script prints its report and compares the test accuracy of
the original, of the shrunk model (the same: the same predictions) and of a
control trained without the group term.

- The MLP (default): 64-256-128-10, ReLU. The output layer takes no group
  term (`exclude`): a class has no unit to spare.
- `--cnn`: Conv2D(32, 3, "valid") → BatchNormalization → ReLU →
  MaxPooling2D(2) → Conv2D(64, 2, "valid", ReLU) → Flatten → Dense(10), the
  group term on the convolutions' filters. `--no-batchnorm` drops the
  BatchNormalization: the filters of a convolution that a BatchNormalization
  follows do not reach 0 (it divides them by their own scale, so the data
  loss pushes back as they shrink); without it they do. `--slim` puts the
  group term on BatchNormalization's γ as well (each entry its own group:
  network slimming): a channel whose γ reaches 0 is cut by `shrink`.

`--lambdas 1e-3,3e-3,1e-2` sweeps λ: a row per λ with the test accuracy,
the parameters kept and the hidden widths, the trade-off curve.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from _shared import load_keras


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group-weight", type=float, default=None,
                        help="λg, the group lasso on the units (default: 3e-3 MLP, 1e-2 CNN)")
    parser.add_argument("--lambdas", default=None, help="comma-separated λgs to sweep (instead of --group-weight)")
    parser.add_argument("--l2-weight", type=float, default=1e-4,
                        help="λ2w, a small L2 on every weight (the control's too)")
    parser.add_argument("--epochs", type=int, default=None, help="default: 60 (MLP), 40 (CNN)")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cnn", action="store_true", help="the convolutional model instead of the MLP")
    parser.add_argument("--batchnorm", action=argparse.BooleanOptionalAction, default=True,
                        help="--cnn: BatchNormalization after the first convolution (--no-batchnorm: none)")
    parser.add_argument("--slim", action="store_true",
                        help="--cnn: the group term on BatchNormalization's γ too (network slimming: a channel "
                             "with γ = 0 is cut by shrink)")
    parser.add_argument("--seed", type=int, default=0, help="the weights' and the shuffling's seed")
    parser.add_argument("--fast", action="store_true", help="10 epochs: a smoke run")
    args = parser.parse_args(argv)
    if args.group_weight is None:
        args.group_weight = 1e-2 if args.cnn else 3e-3
    if args.epochs is None:
        args.epochs = 40 if args.cnn else 60
    if args.fast:
        args.epochs = 10
    args.lambdas = [float(v) for v in args.lambdas.split(",")] if args.lambdas else [args.group_weight]
    return args


def load_data(cnn=False):
    """The digits, standardized by the training set's statistics: 80% train, 20% test, stratified (seed 0)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.2, random_state=0, stratify=digits.target)
    mean, std = x_train.mean(0), x_train.std(0)
    std[std == 0] = 1.0  # pixels that are always 0 stay 0
    scale = lambda x: ((x - mean) / std).astype("float32")  # noqa: E731
    x_train, x_test = scale(x_train), scale(x_test)
    if cnn:
        x_train, x_test = x_train.reshape(-1, 8, 8, 1), x_test.reshape(-1, 8, 8, 1)
    return (x_train, y_train.astype("int32")), (x_test, y_test.astype("int32"))


def build_model(cnn, batchnorm=True):
    import keras

    layers = keras.layers
    if cnn:
        return keras.Sequential([
            keras.Input((8, 8, 1)),
            layers.Conv2D(32, 3, padding="valid", name="conv1"),
            *([layers.BatchNormalization(name="bn1")] if batchnorm else []),
            layers.ReLU(name="relu1"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(64, 2, padding="valid", activation="relu", name="conv2"),
            layers.Flatten(name="flatten"),
            layers.Dense(10, activation="softmax", name="output"),
        ], name="digits_cnn")
    return keras.Sequential([
        keras.Input((64,)),
        layers.Dense(256, activation="relu", name="hidden1"),
        layers.Dense(128, activation="relu", name="hidden2"),
        layers.Dense(10, activation="softmax", name="output"),
    ], name="digits_mlp")


def train(args, group_weight, data):
    """A model trained with λg = `group_weight` (0: the control); returns (model, test accuracy)."""
    import keras

    import keras_l1l2plus as kl

    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(args.seed)
    model = build_model(args.cnn, args.batchnorm)
    kl.regularize(model, l2_weight=args.l2_weight, group_weight=group_weight, groups="units",
                  proximal_weight=True, exclude="output", normalization=args.slim)
    optimizer = keras.optimizers.Adam(args.learning_rate)
    if group_weight:
        optimizer = kl.ProximalOptimizer(optimizer)  # the block soft thresholding after each Adam step
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, verbose=0)
    return model, accuracy(model, x_test, y_test)


def predictions(model, x):
    import keras

    return np.argmax(keras.ops.convert_to_numpy(model(x, training=False)), axis=-1)


def accuracy(model, x, y):
    return float(np.mean(predictions(model, x) == y))


def widths(report):
    """{layer: (units before, units after)} of the hidden Dense/Conv layers (the output layer is left out)."""
    return {row.name: (row.units_before, row.units_after)
            for row in report.layers if row.units_before is not None and row.name != "output"}


def show_widths(w, index):
    return "-".join(str(v[index]) for v in w.values())


def run_one(args, group_weight, data, control_accuracy, verbose):
    """Trains with λg, shrinks, checks the shrunk model's predictions; returns a row of numbers."""
    import keras_l1l2plus as kl

    (_, _), (x_test, y_test) = data
    model, original_accuracy = train(args, group_weight, data)
    small, report = kl.shrink(model, x_test)
    same = bool(np.array_equal(predictions(small, report.select_features(x_test)), predictions(model, x_test)))
    shrunk_accuracy = accuracy(small, report.select_features(x_test), y_test)
    totals = report.totals()
    w = widths(report)
    row = {
        "group_weight": group_weight,
        "test_accuracy": original_accuracy,
        "shrunk_test_accuracy": shrunk_accuracy,
        "same_predictions": same,
        "accuracy_drop": control_accuracy - shrunk_accuracy,  # vs the control, in fractions (0.01 = 1 point)
        "widths_before": [v[0] for v in w.values()],
        "widths_after": [v[1] for v in w.values()],
        "params_before": totals["params_before"],
        "params_after": totals["params_after"],
        "params_ratio": totals["params_before"] / totals["params_after"],
        "macs_before": totals["macs_before"],
        "macs_after": totals["macs_after"],
        "max_error": report.max_error,
    }
    if verbose:
        print(report)
        print()
    return row


def showcase(fast: bool = False) -> dict:
    """The default MLP, trained with the group term and without, and shrunk: for `benchmarks/shrink_inference.py`."""
    import keras_l1l2plus as kl

    args = parse_args(["--fast"] if fast else [])
    load_keras()
    data = load_data()
    (_, _), (x_test, y_test) = data
    _, control_accuracy = train(args, 0.0, data)
    model, accuracy_original = train(args, args.group_weight, data)
    small, report = kl.shrink(model, x_test)
    return {
        "original": model,
        "small": small,
        "report": report,
        "accuracy_original": accuracy_original,
        "accuracy_small": accuracy(small, report.select_features(x_test), y_test),
        "accuracy_control": control_accuracy,
        "description": f"digits MLP 64-256-128-10, λg = {args.group_weight:g} on the hidden units, λ2w = "
        f"{args.l2_weight:g}, {args.epochs} epochs of Adam({args.learning_rate:g}), seed {args.seed}; hidden "
        f"widths {show_widths(widths(report), 0)} → {show_widths(widths(report), 1)}",
    }


def main(argv=None) -> dict:
    args = parse_args(argv)  # before Keras loads: --help answers at once
    keras = load_keras()
    data = load_data(args.cnn)
    kind = ("CNN" if args.batchnorm else "CNN without BatchNormalization") if args.cnn else "MLP"
    print(f"digits {kind}, {keras.backend.backend()} backend, {args.epochs} epochs, Adam({args.learning_rate:g}), "
          f"batch {args.batch_size}, seed {args.seed}, λ2w = {args.l2_weight:g}")
    _, control_accuracy = train(args, 0.0, data)
    print(f"control (no group term): test accuracy {control_accuracy:.4f}\n")
    rows = [run_one(args, lam, data, control_accuracy, verbose=len(args.lambdas) == 1) for lam in args.lambdas]
    unit = "filters" if args.cnn else "hidden widths"
    print(f"| λg | test accuracy | shrunk | vs control | {unit} | params | params ratio | multiply-adds |")
    print("|---:|---:|---:|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['group_weight']:g} | {r['test_accuracy']:.4f} | {r['shrunk_test_accuracy']:.4f} "
              f"| {-100 * r['accuracy_drop']:+.1f} pt | {'-'.join(map(str, r['widths_before']))} → "
              f"{'-'.join(map(str, r['widths_after']))} | {r['params_before']:,} → {r['params_after']:,} "
              f"| {r['params_ratio']:.2f}× | {r['macs_before']:,} → {r['macs_after']:,} |")
    return {"model": "cnn" if args.cnn else "mlp", "batchnorm": args.cnn and args.batchnorm,
            "backend": keras.backend.backend(), "epochs": args.epochs, "seed": args.seed,
            "control_accuracy": control_accuracy, "rows": rows}


if __name__ == "__main__":
    main()
    sys.exit(0)
