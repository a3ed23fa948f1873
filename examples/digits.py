"""Main job: an MLP on scikit-learn's bundled handwritten digits, all four λs.

    python examples/digits.py [--epochs N] [--l1-weight λ] [--l1-bias λ]
                              [--l2-weight λ] [--l2-bias λ] [--zero-grad g]
                              [--proximal] [--out DIR] [--fast]

Trains a 64-128-64-10 MLP on the 8×8 digits that ship with scikit-learn (no
download) with `Loss = DataLoss + L1w + L1b + L2w + L2b`, every term live in
the progress bar (`PenaltyLogger`). On the TensorFlow backend (Keras's
TensorBoard callback needs it) it writes TensorBoard logs to a folder of
their own per run, `OUT/tensorboard/<date-time>-<subgradient|proximal>`, with
the charts that group the terms (`write_tensorboard_layout`). It saves the
model to `OUT/digits.keras`, reloads it and checks predictions and
`model.losses`; plots the terms, the data losses, the accuracies and (with
`--proximal`) the fraction of exactly-zero weights and biases per epoch to
`OUT/digits.png`; ends with a table. `--proximal` applies L1 by the proximal
step (`ProximalOptimizer`), which makes weights exactly zero.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from _shared import load_keras, tensorboard_command

TERMS = ("l1_weight", "l1_bias", "l2_weight", "l2_bias")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--l1-weight", type=float, default=1e-4, help="λ1w")
    parser.add_argument("--l1-bias", type=float, default=5e-5, help="λ1b")
    parser.add_argument("--l2-weight", type=float, default=1e-4, help="λ2w")
    parser.add_argument("--l2-bias", type=float, default=5e-5, help="λ2b")
    parser.add_argument("--zero-grad", type=float, default=0.0, help="d|w|/dw at w = 0, in [-1, 1]")
    parser.add_argument("--proximal", action="store_true",
                        help="apply L1 by a proximal step (exact zeros) instead of its gradient")
    parser.add_argument("--out", type=Path, default=Path("out/digits"), help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast", action="store_true", help="3 epochs, one line each: a smoke run")
    args = parser.parse_args(argv)
    if args.fast:
        args.epochs = 3
    return args


def load_data(seed):
    """Digits scaled to [0, 1]: 60% train, 20% validation, 20% test, stratified."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int32")
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    x_train, x_val, y_train, y_val = train_test_split(
        x_train, y_train, test_size=0.25, random_state=seed, stratify=y_train)
    return (x_train, y_train), (x_val, y_val), (x_test, y_test)


def build_model(args):
    import keras

    import keras_l1l2plus as kl

    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ], name="digits_mlp")
    kl.regularize(model, l1_weight=args.l1_weight, l1_bias=args.l1_bias, l2_weight=args.l2_weight,
                  l2_bias=args.l2_bias, zero_grad=args.zero_grad,
                  proximal_weight=args.proximal, proximal_bias=args.proximal)
    optimizer = keras.optimizers.Adam(1e-3)
    if args.proximal:
        optimizer = kl.ProximalOptimizer(optimizer)  # takes the proximal L1 step after each update
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def mode(args) -> str:
    return "proximal" if args.proximal else "subgradient"


def plot(history, args, path):
    """Four panels, each curve named by its key in `history`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, axes = plt.subplots(1, 4, figsize=(20, 5.2))
    panels = [
        ("penalty terms", "penalty (log scale)", "log", [*TERMS, "penalty"]),
        ("data_loss, val_data_loss and loss", "loss (log scale)", "log", ["data_loss", "val_data_loss", "loss"]),
        ("accuracy", "accuracy", "linear", ["accuracy", "val_accuracy"]),
        ("exact zeros", "fraction of entries exactly 0", "linear", ["sparsity_weight", "sparsity_bias"]),
    ]
    for ax, (title, ylabel, yscale, keys) in zip(axes, panels):
        for key in keys:
            if key in history:
                ax.plot(epochs, history[key], label=key, linestyle="--" if key in ("penalty", "loss") else "-")
        ax.set(title=title, xlabel="epoch", ylabel=ylabel, yscale=yscale)
        ax.grid(alpha=0.3)
        if ax.lines:  # below the axes, where it hides no curve
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, fontsize=9, frameon=False)
    if "sparsity_weight" in history:
        axes[3].set_ylim(-0.02, 1.02)
    else:
        axes[3].text(0.5, 0.5,
                     "subgradient L1 brings no kernel weight to exactly 0:\nsparsity_* is logged with --proximal",
                     ha="center", va="center", transform=axes[3].transAxes)
        axes[3].set(yticks=[], xticks=[])
    fig.suptitle(
        "digits MLP, loss = data_loss + l1_weight + l1_bias + l2_weight + l2_bias\n"
        f"λ1w = {args.l1_weight:g}, λ1b = {args.l1_bias:g}, λ2w = {args.l2_weight:g}, λ2b = {args.l2_bias:g}; "
        f"L1 by {'the proximal step (ProximalOptimizer(Adam))' if args.proximal else 'its subgradient (Adam)'}"
        + (f", zero_grad = {args.zero_grad:g}" if args.zero_grad and not args.proximal else "")
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def new_run_folder(parent: Path, mode: str) -> Path:
    """`parent/<date-time>-<mode>`, a folder no earlier run used (a suffix if one started the same second)."""
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{mode}"
    run, n = parent / stamp, 1
    while run.exists():
        n += 1
        run = parent / f"{stamp}-{n}"
    return run


def check_reload(model, path, x):
    """Saves, reloads, and checks predictions and model.losses match."""
    import keras

    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose([float(v) for v in reloaded.losses], [float(v) for v in model.losses], rtol=1e-6)
    return reloaded


def main(argv=None) -> dict:
    args = parse_args(argv)  # before Keras loads: --help answers at once
    keras = load_keras()
    import keras_l1l2plus as kl
    from keras_l1l2plus.terms import sparsity

    keras.utils.set_random_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = load_data(args.seed)
    model = build_model(args)
    callbacks = [kl.PenaltyLogger()]
    tensorboard = keras.backend.backend() == "tensorflow"  # Keras's TensorBoard callback writes through TF
    if tensorboard:
        run = new_run_folder(args.out / "tensorboard", mode(args))
        kl.write_tensorboard_layout(run, sparsity=args.proximal)  # the charts that group the terms
        callbacks.append(keras.callbacks.TensorBoard(str(run)))
    history = model.fit(
        x_train, y_train, validation_data=(x_val, y_val), epochs=args.epochs, batch_size=32,
        verbose=2 if args.fast else 1, callbacks=callbacks,
    ).history

    check_reload(model, args.out / "digits.keras", x_test)
    plot(history, args, args.out / "digits.png")
    test = model.evaluate(x_test, y_test, verbose=0, return_dict=True)
    terms = {k: float(v) for k, v in kl.penalty_terms(model).items()}
    zeros = {k: float(v) for k, v in sparsity(model).items()}
    summary = {"test_accuracy": test["accuracy"], "test_data_loss": test["loss"] - terms["penalty"],
               **terms, **zeros}

    print(f"\nsaved {args.out / 'digits.keras'}; reloaded: predictions and model.losses match")
    print(f"plot: {args.out / 'digits.png'}")
    if tensorboard:
        print(f"TensorBoard (this run: {run.name}): {tensorboard_command(args.out / 'tensorboard')}\n")
    else:
        print("(TensorBoard logs: TensorFlow backend only)\n")
    print("| quantity | value |\n|---|---:|")
    for key, value in summary.items():
        print(f"| {key} | {value:.6g} |")
    return summary


if __name__ == "__main__":
    main()
    sys.exit(0)
