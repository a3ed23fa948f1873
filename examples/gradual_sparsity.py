"""Gradual sparsity: raise the proximal λ1 on a schedule until a target fraction of weights is exactly 0.

    python examples/gradual_sparsity.py [--target 0.8] [--start 1e-5] [--growth 1.25] [--epochs 80] [--out DIR]

The main job's MLP (64-128-64-10 on scikit-learn's digits), its weights
under a proximal L1 (`regularize(..., proximal_weight=True)` and a
`ProximalOptimizer` around Adam), with

    λ1w(epoch) = start · growth^epoch          (a `PenaltySchedule` callable of the epoch)

Each epoch the proximal step zeroes more weights; training stops at the
first epoch whose `sparsity_weight` (logged by `PenaltyLogger`) reaches the
target. Plots, per epoch, the fraction of exact-zero weights and the
validation accuracy against λ1w to `OUT/gradual_sparsity.png`, and prints
the path as a table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from _shared import load_keras


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.8, help="fraction of exact-zero weights to reach")
    parser.add_argument("--start", type=float, default=1e-5, help="λ1w at epoch 0")
    parser.add_argument("--growth", type=float, default=1.25, help="λ1w's factor per epoch")
    parser.add_argument("--epochs", type=int, default=80, help="at most this many epochs")
    parser.add_argument("--out", type=Path, default=Path("out/gradual_sparsity"))
    args = parser.parse_args(argv)
    if not 0 < args.target < 1:
        parser.error(f"--target must be in (0, 1); got {args.target}")
    return args


def plot(history, target, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lam = np.array(history["lambda_l1_weight"])
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    ax.plot(lam, history["sparsity_weight"], marker=".", label="sparsity_weight")
    ax.plot(lam, history["val_accuracy"], marker=".", label="val_accuracy")
    ax.axhline(target, color="gray", linestyle=":", label=f"target sparsity {target:g}")
    ax.set(xscale="log", xlabel="lambda_l1_weight (λ1w of the epoch, log scale)", ylabel="fraction",
           ylim=(-0.02, 1.02), title="gradual sparsity: proximal L1 on the weights, λ1w raised each epoch")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> dict:
    args = parse_args(argv)  # before Keras loads: --help answers at once
    keras = load_keras()
    import keras_l1l2plus as kl
    from digits import load_data

    keras.utils.set_random_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    (x, y), (x_val, y_val), _ = load_data(0)
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    kl.regularize(model, l1_weight=args.start, proximal_weight=True)
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.Adam(1e-3)),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    def stop_at_target(epoch, logs):
        if logs["sparsity_weight"] >= args.target:
            model.stop_training = True

    history = model.fit(
        x, y, validation_data=(x_val, y_val), batch_size=32, epochs=args.epochs, verbose=0,
        callbacks=[kl.PenaltyLogger(),
                   kl.PenaltySchedule(l1_weight=lambda epoch: args.start * args.growth ** epoch),
                   keras.callbacks.LambdaCallback(on_epoch_end=stop_at_target)],
    ).history
    plot(history, args.target, args.out / "gradual_sparsity.png")

    print("| epoch | lambda_l1_weight | sparsity_weight | val_accuracy |\n|---:|---:|---:|---:|")
    for epoch, (lam, zeros, acc) in enumerate(zip(history["lambda_l1_weight"], history["sparsity_weight"],
                                                  history["val_accuracy"])):
        print(f"| {epoch} | {lam:.3g} | {zeros:.3f} | {acc:.3f} |")
    kernels = [layer.kernel.numpy() for layer in model.layers]
    final = float(sum((k == 0).sum() for k in kernels) / sum(k.size for k in kernels))
    reached = final >= args.target
    print(f"\n{'reached' if reached else 'did not reach'} {args.target:g}: {final:.3f} of the weights are "
          f"exactly 0 after {len(history['loss'])} epochs; plot: {args.out / 'gradual_sparsity.png'}")
    return {"epochs": len(history["loss"]), "sparsity": final, "val_accuracy": history["val_accuracy"][-1],
            "lambdas": history["lambda_l1_weight"], "path": history["sparsity_weight"]}


if __name__ == "__main__":
    main()
    sys.exit(0)
