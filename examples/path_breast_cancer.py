"""The lasso path of the breast-cancer features, against scikit-learn's `lasso_path`.

    python examples/path_breast_cancer.py [--n-lambdas N] [--eps E] [--steps S] [--fast]

scikit-learn's bundled breast-cancer data (the training 75% of a stratified
split, seed 0, as `breast_cancer_features.py` loads it: 426 samples, 30
features standardized by it), the labels as ±1 targets centred (lasso_path
fits no intercept, and the centred targets need none). A linear model,
Dense(1) without bias, Keras's `"mse"` (the mean of (y − ŷ)², twice
scikit-learn's `(1/(2n))·‖y − Xw‖²`: `loss_scale=2`), L1 on the weights with
the proximal step (`kl.regularize(model, l1_weight=..., proximal_weight=True)`,
`ProximalOptimizer(SGD(1/L))`, full batch: ISTA), trained along
`kl.regularization_path(..., lambdas="auto")`: λ_max (`2·‖Xᵀy‖∞/n` here,
scikit-learn's α_max times `loss_scale`) down to `eps·λ_max`, `--steps`
full-batch steps per λ, each λ warm-started from the last.
`kl.to_sklearn(λ, loss_scale=2)` gives each λ's α, and
`sklearn.linear_model.lasso_path` runs on the same data and the same αs.

For each feature: the first λ (largest) at which its coefficient is not 0,
in both; the entry order, the features that enter at the same grid point in
both, the Jaccard index of the active sets at each λ, and the largest
coefficient difference. The first features to enter are printed with their
names.

The default run takes about 70 s on TensorFlow on 2 CPU cores; `--fast`
(8 λs, eps 0.1, 2000 steps per λ) is the quicker run the tests use (15 s
on TensorFlow, 10 s on JAX, 30 s on PyTorch, which takes one step per call).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from _shared import load_keras

REPEAT = 100  # copies of the training set in one epoch: an epoch is 100 full-batch steps


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-lambdas", type=int, default=20, help="the auto grid's size")
    parser.add_argument("--eps", type=float, default=0.01, help="λ_min / λ_max")
    parser.add_argument("--steps", type=int, default=6000, help="full-batch proximal SGD (ISTA) steps per λ")
    parser.add_argument("--show", type=int, default=8, help="how many of the first features to enter to print")
    parser.add_argument("--fast", action="store_true", help="8 λs, eps 0.1, 2000 steps per λ: quicker")
    args = parser.parse_args(argv)
    if args.fast:
        args.n_lambdas, args.eps, args.steps = 8, 0.1, 2000
    return args


def load_data():
    """The standardized training features and the centred ±1 targets (float32), and the feature names."""
    from breast_cancer_features import load_data as load

    (x, labels), _, names = load(seed=0)
    y = 2.0 * labels - 1.0
    y = (y - y.mean()).astype("float32")[:, None]
    return x, y, [str(n) for n in names]


def entries(active: np.ndarray) -> np.ndarray:
    """Per feature, the first grid index at which it is active (`active`: features × λs), or −1 (never)."""
    return np.array([int(np.argmax(row)) if row.any() else -1 for row in active])


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = np.sum(a | b)
    return float(np.sum(a & b) / union) if union else 1.0


def main(argv=None) -> dict:
    args = parse_args(argv)  # before Keras loads: --help answers at once
    keras = load_keras()
    from sklearn.linear_model import lasso_path

    import keras_l1l2plus as kl

    x, y, names = load_data()
    n = len(x)
    loss_scale = 2.0  # Keras's "mse" on one output is twice scikit-learn's (1/(2n))·‖y − Xw‖²
    lipschitz = loss_scale * np.linalg.eigvalsh(x.astype("float64").T @ x / n).max()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((x.shape[1],)),
                              keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    kl.regularize(model, l1_weight=1.0, proximal_weight=True)  # the path sets λ; 1.0 only marks the term
    # TensorFlow loops over the steps of one call in its graph; JAX would unroll them (compile time), PyTorch: 1 only.
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.SGD(1.0 / lipschitz)), loss="mse",
                  steps_per_execution=100 if keras.backend.backend() == "tensorflow" else 1)
    print(f"breast cancer, {n} samples × {x.shape[1]} features, {keras.backend.backend()} backend: Dense(1) + mse + "
          f"proximal L1, full-batch SGD(1/L), {args.steps} steps per λ, {args.n_lambdas} λs, eps {args.eps:g}")
    # `steps` full-batch steps per λ: the data repeated REPEAT times, an epoch is REPEAT batches of the whole set.
    # (λ_max is accumulated over every batch of what the path is given, one eager gradient each: 100 copies, not
    # one per step, keep that to a second.)
    epochs = -(-args.steps // REPEAT)
    path = kl.regularization_path(model, np.tile(x, (REPEAT, 1)), np.tile(y, (REPEAT, 1)),
                                  lambdas="auto", n_lambdas=args.n_lambdas, eps=args.eps, epochs=epochs,
                                  batch_size=n, shuffle=False, verbose=0)
    alphas = [kl.path.to_sklearn(lam, loss_scale=loss_scale)[0] for lam in path.lambdas]
    alpha_max = float(np.abs(x.astype("float64").T @ y[:, 0]).max() / n)
    print(f"λ_max = {path.lambda_max:.6g} = {loss_scale:g} × α_max (‖Xᵀy‖∞/n = {alpha_max:.6g}): "
          f"ratio {path.lambda_max / alpha_max:.6f}")
    _, coefs, _ = lasso_path(x.astype("float64"), y[:, 0].astype("float64"), alphas=alphas, tol=1e-10,
                             max_iter=100_000)
    ours = np.stack([path.weights_at(lam)[0][:, 0] for lam in path.lambdas], axis=1)  # features × λs
    active_ours, active_theirs = ours != 0, coefs != 0
    per_lambda = [jaccard(active_ours[:, k], active_theirs[:, k]) for k in range(len(alphas))]
    entry_ours, entry_theirs = entries(active_ours), entries(active_theirs)
    order = lambda entry: sorted((int(i) for i in np.flatnonzero(entry >= 0)), key=lambda i: (entry[i], i))  # noqa
    print("\n| α (sklearn) | λ (Keras mse) | active: Keras | lasso_path | Jaccard | max |Δw| |")
    print("|---:|---:|---:|---:|---:|---:|")
    for k, (alpha, lam) in enumerate(zip(alphas, path.lambdas)):
        print(f"| {alpha:.4g} | {lam:.4g} | {int(active_ours[:, k].sum())} | {int(active_theirs[:, k].sum())} "
              f"| {per_lambda[k]:.3f} | {np.abs(ours[:, k] - coefs[:, k]).max():.2g} |")
    print(f"\nthe first {args.show} features to enter (grid index, α at entry), Keras vs lasso_path:")
    first_ours, first_theirs = order(entry_ours)[:args.show], order(entry_theirs)[:args.show]
    for rank, (i, j) in enumerate(zip(first_ours, first_theirs), 1):
        print(f"{rank:2d}. {names[i]:<24} k={entry_ours[i]:2d} α={alphas[entry_ours[i]]:.4g}   |   "
              f"{names[j]:<24} k={entry_theirs[j]:2d} α={alphas[entry_theirs[j]]:.4g}")
    same_entry = float(np.mean(entry_ours == entry_theirs))
    worst = np.unravel_index(int(np.argmax(np.abs(ours - coefs))), ours.shape)
    print(f"\nfeatures entering at the same λ in both: {np.sum(entry_ours == entry_theirs)} of {len(names)}; "
          f"Jaccard of the active sets: min {min(per_lambda):.3f}, mean {np.mean(per_lambda):.3f}; "
          f"max |Δw| {np.abs(ours - coefs).max():.2g} ({names[worst[0]]} at α = {alphas[worst[1]]:.4g}; "
          f"largest |w| {np.abs(coefs).max():.3g})")
    return {"backend": keras.backend.backend(), "steps": args.steps, "n_lambdas": args.n_lambdas, "eps": args.eps,
            "lambdas": path.lambdas, "alphas": alphas, "lambda_max": path.lambda_max, "alpha_max": alpha_max,
            "jaccard": per_lambda, "entry_keras": entry_ours.tolist(), "entry_sklearn": entry_theirs.tolist(),
            "same_entry": same_entry, "order_keras": [names[i] for i in order(entry_ours)],
            "order_sklearn": [names[i] for i in order(entry_theirs)],
            "active_keras": active_ours.sum(0).tolist(), "active_sklearn": active_theirs.sum(0).tolist(),
            "max_coef_diff": float(np.abs(ours - coefs).max()), "max_coef": float(np.abs(coefs).max()),
            "max_coef_diff_at": [names[worst[0]], int(worst[1])],
            "zeros_weight": path.values("zeros_weight")}


if __name__ == "__main__":
    main()
    sys.exit(0)
