"""The regularization path of a digits MLP: λ chosen by cross-validation ("min" and "1se").

    python examples/path_digits.py [--penalty group|l1] [--lambdas λ,λ,...] [--epochs N] [--cv K]
                                   [--seed S] [--out DIR] [--fast]

scikit-learn's bundled 8×8 digits, standardized by the training set, split
60/20/20 (train/validation/test, stratified, seed 0). An MLP 64-128-64-10
(ReLU, softmax) with the group lasso on its hidden units (`kl.regularize(
model, group_weight=λ, groups="units", proximal_weight=True, exclude=
"output")`, `--penalty l1`: L1 on every weight instead) and
`ProximalOptimizer(Adam(1e-3))` is trained along a grid of λs by
`kl.regularization_path(..., direction="increasing", cv=K)`: from the
smallest λ up (from the dense model to the sparse one: a network with
several regularized layers cannot leave the all-zero point a decreasing
path would start from), each λ warm-started from the last, `--epochs` epochs
per λ. The K folds of the training set choose λ: "min" (the lowest mean
validation data loss) and "1se" (the largest λ within one standard error of
it); the path trained on the whole training set also records the
validation set at each λ. The script prints a line per λ (the path's own),
a table per λ (validation data loss, cv mean ± se, exact zeros, live units,
test accuracy), then the two chosen λs with their sparsity and the test
accuracy of `path.best(rule)`; it saves `path.plot()` to
`OUT/path_digits.png` and `path.to_csv(OUT/path_digits.csv)`.

The default run (12 λs × 6 paths × 10 epochs) takes about 80 s on
TensorFlow on 2 CPU cores; `--fast` (4 λs, 4 epochs, 2 folds) about 10 s
on each backend: a smoke run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from _shared import load_keras

DEFAULT_LAMBDAS = {"group": "1e-4,3e-4,1e-3,2e-3,3e-3,5e-3,1e-2,2e-2,3e-2,5e-2,0.1,0.2",
                   "l1": "1e-5,3e-5,1e-4,2e-4,3e-4,5e-4,1e-3,2e-3,3e-3,5e-3,1e-2,2e-2"}
FAST_LAMBDAS = {"group": "1e-3,1e-2,0.1,0.3", "l1": "1e-4,1e-3,1e-2,3e-2"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--penalty", choices=("group", "l1"), default="group",
                        help="group: the group lasso on the hidden units; l1: L1 on every weight")
    parser.add_argument("--lambdas", default=None, help="comma-separated λs (default: 12 from 1e-4 to 0.2 "
                                                        "for group, 1e-5 to 2e-2 for l1)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per λ (batch --batch-size)")
    parser.add_argument("--cv", type=int, default=5, help="folds of the training set that choose λ")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's")
    parser.add_argument("--seed", type=int, default=0, help="the weights' and the shuffling's seed")
    parser.add_argument("--out", default="out", help="where path_digits.png and path_digits.csv go")
    parser.add_argument("--fast", action="store_true", help="4 λs, 4 epochs, 2 folds: a smoke run")
    args = parser.parse_args(argv)
    if args.fast:
        args.lambdas = args.lambdas or FAST_LAMBDAS[args.penalty]
        args.epochs, args.cv = 4, 2
    args.lambdas = [float(v) for v in (args.lambdas or DEFAULT_LAMBDAS[args.penalty]).split(",")]
    return args


def load_data():
    """The digits, standardized by the training set: 60% train, 20% validation, 20% test, stratified (seed 0)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_rest, y_train, y_rest = train_test_split(
        digits.data, digits.target, test_size=0.4, random_state=0, stratify=digits.target)
    x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, test_size=0.5, random_state=0, stratify=y_rest)
    mean, std = x_train.mean(0), x_train.std(0)
    std[std == 0] = 1.0  # pixels that are always 0 stay 0
    scale = lambda x: ((x - mean) / std).astype("float32")  # noqa: E731
    return ((scale(x_train), y_train.astype("int32")), (scale(x_val), y_val.astype("int32")),
            (scale(x_test), y_test.astype("int32")))


def build_model(args):
    import keras

    import keras_l1l2plus as kl

    layers = keras.layers
    keras.utils.set_random_seed(args.seed)
    model = keras.Sequential([
        keras.Input((64,)),
        layers.Dense(128, activation="relu", name="hidden1"),
        layers.Dense(64, activation="relu", name="hidden2"),
        layers.Dense(10, activation="softmax", name="output"),
    ], name="digits_mlp")
    first = args.lambdas[0]
    if args.penalty == "group":  # the output layer takes no group term: a class has no unit to spare
        kl.regularize(model, group_weight=first, groups="units", proximal_weight=True, exclude="output")
    else:
        kl.regularize(model, l1_weight=first, proximal_weight=True)
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.Adam(args.learning_rate)),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def live_units(model) -> list[int]:
    """Per hidden layer, the units whose kernel column is not all exact zeros."""
    import keras

    return [int(np.any(keras.ops.convert_to_numpy(model.get_layer(name).kernel) != 0, axis=0).sum())
            for name in ("hidden1", "hidden2")]


def accuracy(model, x, y) -> float:
    import keras

    return float(np.mean(np.argmax(keras.ops.convert_to_numpy(model(x, training=False)), -1) == y))


def main(argv=None) -> dict:
    args = parse_args(argv)  # before Keras loads: --help answers at once
    keras = load_keras()
    import matplotlib

    matplotlib.use("Agg")
    import keras_l1l2plus as kl

    (x, y), (x_val, y_val), (x_test, y_test) = load_data()
    term = "group_weight" if args.penalty == "group" else "l1_weight"
    print(f"digits MLP 64-128-64-10, {keras.backend.backend()} backend, {term} path over {len(args.lambdas)} λs "
          f"(increasing), {args.epochs} epochs per λ, Adam({args.learning_rate:g}), batch {args.batch_size}, "
          f"cv={args.cv}, seed {args.seed}")
    model = build_model(args)
    began = time.perf_counter()
    path = kl.regularization_path(model, x, y, lambdas=args.lambdas, terms=term, direction="increasing",
                                  epochs=args.epochs, batch_size=args.batch_size, cv=args.cv,
                                  validation_data=(x_val, y_val), verbose=1)
    seconds = time.perf_counter() - began
    test_accuracy, widths = [], []
    for lam in path.lambdas:  # the weights kept at each λ: the test set, and the hidden units still live per layer
        model_weights = model.get_weights()
        model.set_weights(path.weights_at(lam))
        test_accuracy.append(accuracy(model, x_test, y_test))
        widths.append(live_units(model))
        model.set_weights(model_weights)
    groups = "live_groups" in path.records[0]
    print(f"\n{len(path.lambdas)} λs × {args.cv + 1} paths ({args.cv} folds, then the whole training set) in "
          f"{seconds:.0f} s\n")
    print(f"| λ | val_data_loss | val_accuracy | cv mean ± se | zeros_weight |{' live units |' if groups else ''} "
          "hidden widths | test accuracy |")
    print(f"|---:|---:|---:|---:|---:|{'---:|' if groups else ''}---|---:|")
    for i, (lam, record) in enumerate(zip(path.lambdas, path.records)):
        live = f" {int(record['live_groups'])} |" if groups else ""
        print(f"| {lam:.3g} | {record['val_data_loss']:.4f} | {record['val_accuracy']:.4f} "
              f"| {path.cv['mean'][i]:.4f} ± {path.cv['se'][i]:.4f} | {record['zeros_weight']:.3f} |{live} "
              f"{'-'.join(map(str, widths[i]))} | {test_accuracy[i]:.4f} |")
    chosen = {}
    for rule in ("min", "1se"):
        i = path.index(rule=rule)
        best = path.best(rule)
        record = path.records[i]
        chosen[rule] = {"lambda": path.lambdas[i], "index": i, "zeros_weight": record["zeros_weight"],
                        "live_groups": record.get("live_groups"), "widths": widths[i],
                        "test_accuracy": accuracy(best, x_test, y_test),
                        "cv_mean": path.cv["mean"][i], "cv_se": path.cv["se"][i]}
        c = chosen[rule]
        live = f", {int(c['live_groups'])} live units of 192" if groups else ""
        live += f" (hidden widths {'-'.join(map(str, c['widths']))})"
        print(f"{rule:>3}: λ = {c['lambda']:.3g} (cv {c['cv_mean']:.4f} ± {c['cv_se']:.4f}), zeros_weight "
              f"{c['zeros_weight']:.3f}{live}, test accuracy of path.best({rule!r}) {c['test_accuracy']:.4f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figure = path.plot()
    figure.axes[0].set_title(f"digits MLP 64-128-64-10, {term} path, cv={args.cv}, {args.epochs} epochs per λ, "
                             f"{keras.backend.backend()}, seed {args.seed}", fontsize=9)
    figure.tight_layout()
    figure.savefig(out / "path_digits.png", dpi=100)
    path.to_csv(out / "path_digits.csv")
    print(f"\nsaved {out / 'path_digits.png'} and {out / 'path_digits.csv'}")
    return {"backend": keras.backend.backend(), "penalty": args.penalty, "epochs": args.epochs, "cv": args.cv,
            "seed": args.seed, "seconds": seconds, "lambdas": path.lambdas,
            "zeros_weight": path.values("zeros_weight"),
            "live_groups": path.values("live_groups") if groups else None,
            "val_data_loss": path.values("val_data_loss"), "cv_mean": path.cv["mean"], "cv_se": path.cv["se"],
            "test_accuracy": test_accuracy, "widths": widths, "chosen": chosen}


if __name__ == "__main__":
    main()
    sys.exit(0)
