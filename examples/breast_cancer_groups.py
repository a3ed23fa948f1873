"""Group lasso on the inputs: feature selection, checked against scikit-learn, then `shrink`.

    python examples/breast_cancer_groups.py [--alphas 0.01,0.03,0.1] [--steps 5000]
                                            [--group-weight λ] [--epochs N] [--seed S] [--fast]

scikit-learn's bundled breast-cancer data (569 samples, 30 standardized
features, a stratified 75/25 split, seed 0), one-hot targets (2 columns).
An input feature is dropped when its whole row of the first kernel is
exactly 0: `kl.regularize(model, group_weight=λ, groups="inputs",
proximal_weight=True)` and a `ProximalOptimizer`.

1. A linear model, Dense(2) with the mean squared error on the one-hot
   targets, full-batch proximal SGD (step 1/L): Keras's
   `(1/(2n))·‖Y − XW − b‖² + λ·Σ_i ‖W_i‖₂` is scikit-learn's
   `MultiTaskLasso(alpha=λ)` objective, term for term. For each λ in
   `--alphas`: the features each selects, their overlap (Jaccard index), the
   largest coefficient difference and both validation accuracies.
2. An MLP, 30-16-2 (ReLU, softmax, cross-entropy) trained with
   `ProximalOptimizer(Adam)` and `groups="inputs"` (the rows of the
   first kernel); its selected features are compared with
   `MultiTaskLasso` and with L1 `LogisticRegression` at the λ (C) whose
   selection has the closest size. `kl.shrink(model, x)` then removes the
   dropped features: `report.kept_features`, and `report.select_features(x)`
   gives the small model its inputs.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np
from _shared import load_keras


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alphas", default="0.01,0.03,0.1", help="comma-separated λs of the linear comparison")
    parser.add_argument("--steps", type=int, default=5000, help="full-batch proximal SGD steps per λ")
    parser.add_argument("--group-weight", type=float, default=0.05, help="the MLP's λg")
    parser.add_argument("--epochs", type=int, default=100, help="the MLP's epochs (batch 32)")
    parser.add_argument("--seed", type=int, default=0, help="the MLP's weights' and shuffling's seed")
    parser.add_argument("--fast", action="store_true", help="1000 steps, 50 epochs: a quicker run")
    args = parser.parse_args(argv)
    if args.fast:
        args.steps, args.epochs = 1000, 50
    args.alphas = [float(v) for v in args.alphas.split(",")]
    return args


def load_data():
    from breast_cancer_features import load_data as load

    (x, y), (x_val, y_val), names = load(seed=0)
    one_hot = lambda labels: np.eye(2, dtype="float32")[labels.astype(int)]  # noqa: E731
    return (x, one_hot(y)), (x_val, one_hot(y_val)), [str(n) for n in names]


def jaccard(a, b) -> float:
    a, b = set(int(i) for i in a), set(int(i) for i in b)
    return len(a & b) / len(a | b) if a | b else 1.0


def accuracy(scores, targets) -> float:
    return float(np.mean(np.argmax(scores, -1) == np.argmax(targets, -1)))


def selected(kernel) -> np.ndarray:
    """The input features whose row of `kernel` is not all zeros."""
    return np.flatnonzero(np.any(kernel != 0, axis=1))


def linear_keras(alpha, train, steps):
    """Dense(2), MSE on one-hot targets, group lasso on the rows, full-batch proximal SGD; (W, b)."""
    import keras
    from breast_cancer_features import full_batch

    import keras_l1l2plus as kl

    (x, y) = train
    lipschitz = np.linalg.eigvalsh(np.c_[x, np.ones(len(x))].T @ np.c_[x, np.ones(len(x))] / len(x)).max()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(2, kernel_initializer="zeros")])
    kl.regularize(model, group_weight=alpha, groups="inputs", proximal_weight=True)
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.SGD(1.0 / lipschitz)), loss="mse",
                  steps_per_execution=100 if keras.backend.backend() != "torch" else 1)  # PyTorch: 1 only
    model.fit(full_batch(x, y, steps), epochs=1, verbose=0)
    kernel, bias = (keras.ops.convert_to_numpy(v) for v in model.layers[0].weights)
    return kernel, bias


def compare_linear(args, train, val, names):
    from sklearn.linear_model import MultiTaskLasso

    (x, y), (x_val, y_val) = train, val
    x64 = x.astype("float64")  # scikit-learn's coordinate descent in float64
    rows = []
    print("1. Dense(2) + MSE + group lasso on the rows (proximal SGD, full batch) vs MultiTaskLasso(alpha=λ)\n")
    print("| λ | Keras: features | MultiTaskLasso: features | Jaccard | max |ΔW| | accuracy Keras | MTL |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for alpha in args.alphas:
        kernel, bias = linear_keras(alpha, train, args.steps)
        lasso = MultiTaskLasso(alpha=alpha, max_iter=100_000, tol=1e-7).fit(x64, y)
        ours, theirs = selected(kernel), selected(lasso.coef_.T)
        row = {"alpha": alpha, "keras": [names[i] for i in ours], "sklearn": [names[i] for i in theirs],
               "jaccard": jaccard(ours, theirs), "max_coef_diff": float(np.abs(kernel - lasso.coef_.T).max()),
               "accuracy": accuracy(x_val @ kernel + bias, y_val),
               "sklearn_accuracy": accuracy(lasso.predict(x_val), y_val)}
        rows.append(row)
        print(f"| {alpha:g} | {len(ours)} | {len(theirs)} | {row['jaccard']:.3f} | {row['max_coef_diff']:.2g} "
              f"| {row['accuracy']:.3f} | {row['sklearn_accuracy']:.3f} |")
    print()
    return rows


def closest_selection(fit, values, size):
    """Over `values` of a λ (or C), the selection (indices) whose size is closest to `size`, and that value."""
    best = None
    for value in values:
        chosen = fit(value)
        if best is None or abs(len(chosen) - size) < abs(len(best[0]) - size):
            best = (chosen, value)
    return best


def mlp(args, train, val, names):
    import keras
    from sklearn.linear_model import LogisticRegression, MultiTaskLasso

    import keras_l1l2plus as kl

    (x, y), (x_val, y_val) = train, val
    x64 = x.astype("float64")
    keras.utils.set_random_seed(args.seed)
    model = keras.Sequential([
        keras.Input((x.shape[1],), name="features"),
        keras.layers.Dense(16, activation="relu", name="hidden"),
        keras.layers.Dense(2, activation="softmax", name="output"),
    ], name="breast_cancer_mlp")
    kl.regularize(model, group_weight=args.group_weight, groups="inputs", proximal_weight=True)
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.Adam(1e-3)), loss="categorical_crossentropy")
    model.fit(x, y, epochs=args.epochs, batch_size=32, verbose=0)
    ours = selected(keras.ops.convert_to_numpy(model.get_layer("hidden").kernel))
    scores = keras.ops.convert_to_numpy(model(x_val, training=False))

    mtl, alpha = closest_selection(
        lambda a: selected(MultiTaskLasso(alpha=a, max_iter=100_000, tol=1e-7).fit(x64, y).coef_.T),
        np.geomspace(1e-3, 0.3, 40), len(ours))
    labels = np.argmax(y, -1)

    def l1_logistic(c):
        with warnings.catch_warnings():  # scikit-learn 1.8 deprecates penalty= for l1_ratio=; older ones lack it
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            fit = LogisticRegression(C=c, penalty="l1", solver="liblinear", max_iter=10_000).fit(x, labels)
        return np.flatnonzero(fit.coef_[0])

    logistic, c = closest_selection(l1_logistic, np.geomspace(1e-3, 10, 40), len(ours))

    small, report = kl.shrink(model, x_val)
    x_small = report.select_features(x_val)
    small_scores = keras.ops.convert_to_numpy(small(x_small, training=False))
    kept = report.kept_features["features"]
    result = {
        "group_weight": args.group_weight,
        "kept": [names[i] for i in ours],
        "accuracy": accuracy(scores, y_val),
        "shrunk_accuracy": accuracy(small_scores, y_val),
        "same_predictions": bool(np.array_equal(np.argmax(small_scores, -1), np.argmax(scores, -1))),
        "kept_features": [int(i) for i in kept],
        "x_small_shape": list(x_small.shape),
        "hidden_before": 16, "hidden_after": int(report.layers[0].units_after),
        "params_before": report.totals()["params_before"], "params_after": report.totals()["params_after"],
        "mtl_alpha": float(alpha), "mtl_kept": [names[i] for i in mtl], "jaccard_mtl": jaccard(ours, mtl),
        "logistic_c": float(c), "logistic_kept": [names[i] for i in logistic],
        "jaccard_logistic": jaccard(ours, logistic),
    }
    print(f"2. MLP 30-16-2, groups=\"inputs\", λg = {args.group_weight:g}, ProximalOptimizer(Adam(1e-3)), "
          f"{args.epochs} epochs, seed {args.seed}: {len(ours)} of 30 features kept, "
          f"validation accuracy {result['accuracy']:.3f}")
    print(f"   kept: {', '.join(result['kept'])}")
    print(f"   MultiTaskLasso(alpha={alpha:.3g}): {len(mtl)} features, Jaccard {result['jaccard_mtl']:.3f}")
    print(f"   LogisticRegression(penalty='l1', C={c:.3g}): {len(logistic)} features, "
          f"Jaccard {result['jaccard_logistic']:.3f}\n")
    print(report)
    print(f"\nreport.kept_features = {{'features': {kept.tolist()}}}")
    print(f"report.select_features(x_val).shape = {x_small.shape} (from {x_val.shape}); shrunk model's validation "
          f"accuracy {result['shrunk_accuracy']:.3f}, same predictions: {result['same_predictions']}")
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)  # before Keras loads: --help answers at once
    keras = load_keras()
    train, val, names = load_data()
    print(f"{keras.backend.backend()} backend\n")
    linear = compare_linear(args, train, val, names)
    return {"backend": keras.backend.backend(), "linear": linear, "mlp": mlp(args, train, val, names)}


if __name__ == "__main__":
    main()
    sys.exit(0)
