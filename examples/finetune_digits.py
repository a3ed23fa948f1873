"""Fine-tuning with L2 toward the pretrained weights (L2-SP), against plain fine-tuning and L2 toward zero.

    python examples/finetune_digits.py [--train N] [--epochs N] [--seeds S] [--lambdas λ,λ,...] [--fast]

No download: scikit-learn's bundled 8×8 digits. A 64-128-64 MLP is
pretrained on the digits 0–4 (all of them but a test share) and saved as a
`.keras` file: the "pretrained model". The new task is the digits 5–9 with
few labels: `--train` examples (150 by default) to fine-tune on, as many to
choose λ on (validation), the rest to test. Each fine-tuning loads the
pretrained file, keeps its two hidden layers and puts a new 5-way head on
them, then trains all of it with Adam three ways:

- plain: no penalty;
- L2 toward zero: `kl.regularize(model, l2_weight=λ)` on every kernel;
- L2-SP (Li, Grandvalet & Davoine, ICML 2018): the pretrained kernels pulled
  toward their pretrained values w₀, the new head toward zero, in one call:

      kl.regularize(model, l2_anchor_weight=λ,
                    rules=[("new_head", {"l2_weight": λ, "l2_anchor_weight": 0.0})])

  (w₀ is each kernel at the call: the pretrained weights).

λ is chosen per method on the validation examples (best accuracy, then
lowest validation loss) from `--lambdas`; the script prints, per method, the
chosen λ, the test accuracy (mean and range over `--seeds` draws of the
labelled examples) and how far the hidden kernels moved from w₀,
‖w − w₀‖ / ‖w₀‖.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
from _shared import load_keras

LAMBDAS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
METHODS = ("plain", "l2", "l2_sp")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=150, help="labelled examples of 5-9 to fine-tune on")
    parser.add_argument("--epochs", type=int, default=60, help="fine-tuning epochs")
    parser.add_argument("--pretrain-epochs", type=int, default=40)
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's, for fine-tuning")
    parser.add_argument("--seeds", type=int, default=3, help="draws of the labelled examples")
    parser.add_argument("--lambdas", default=",".join(map(str, LAMBDAS)), help="the λ grid, comma-separated")
    parser.add_argument("--fast", action="store_true", help="a smoke run: 2 λs, 1 seed, few epochs")
    args = parser.parse_args(argv)
    args.lambdas = [float(v) for v in args.lambdas.split(",")]
    if args.fast:
        args.lambdas, args.seeds, args.epochs, args.pretrain_epochs = args.lambdas[2:4], 1, 5, 5
    return args


def load_data():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")  # pixel intensities 0..16
    old, new = y < 5, y >= 5
    return (x[old], y[old]), (x[new], (y[new] - 5))


def pretrain(keras, data, epochs, path):
    """The pretrained model: 64-128-64 with a 5-way head, trained on the digits 0–4, saved at `path`."""
    x, y = data
    keras.utils.set_random_seed(1234)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu", name="hidden_1"),
            keras.layers.Dense(64, activation="relu", name="hidden_2"),
            keras.layers.Dense(5, name="old_head"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    model.save(path)
    return model


def fine_tune(keras, kl, path, method, lam, split, args, seed):
    """A new head on the pretrained hidden layers, trained on the new task; returns the model and w₀."""
    (x_train, y_train), (x_val, y_val) = split["train"], split["val"]
    pretrained = keras.models.load_model(path)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((64,)), pretrained.get_layer("hidden_1"), pretrained.get_layer("hidden_2"),
         keras.layers.Dense(5, name="new_head")]
    )
    w0 = [keras.ops.convert_to_numpy(model.get_layer(n).kernel) for n in ("hidden_1", "hidden_2")]
    if method == "l2":
        kl.regularize(model, l2_weight=lam)
    elif method == "l2_sp":
        kl.regularize(model, l2_anchor_weight=lam,
                      rules=[("new_head", {"l2_weight": lam, "l2_anchor_weight": 0.0})])
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, batch_size=32, epochs=args.epochs, verbose=0, shuffle=True)
    return model, w0


def evaluate(keras, model, x, y):
    logits = keras.ops.convert_to_numpy(model(x, training=False))  # not predict: one trace per model
    loss = float(keras.ops.convert_to_numpy(
        keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)).mean())
    return float((logits.argmax(1) == y).mean()), loss


def moved(keras, model, w0):
    """‖w − w₀‖ / ‖w₀‖ over the pretrained hidden kernels."""
    w = [keras.ops.convert_to_numpy(model.get_layer(n).kernel) for n in ("hidden_1", "hidden_2")]
    return float(np.sqrt(sum(np.square(a - b).sum() for a, b in zip(w, w0)) / sum(np.square(b).sum() for b in w0)))


def split_new_task(data, n, seed):
    """`n` training and `n` validation examples of the new task, stratified; the rest is the test set."""
    from sklearn.model_selection import train_test_split

    x, y = data
    x_rest, x_train, y_rest, y_train = train_test_split(x, y, test_size=n, stratify=y, random_state=seed)
    x_test, x_val, y_test, y_val = train_test_split(x_rest, y_rest, test_size=n, stratify=y_rest, random_state=seed)
    return {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    keras = load_keras()
    import keras_l1l2plus as kl

    old, new = load_data()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pretrained.keras")
        pretrain(keras, old, args.pretrain_epochs, path)
        results = {m: {"lambda": [], "test_accuracy": [], "moved": []} for m in METHODS}
        for seed in range(args.seeds):
            split = split_new_task(new, args.train, seed)
            for method in METHODS:
                best = None
                for lam in (0.0,) if method == "plain" else args.lambdas:
                    model, w0 = fine_tune(keras, kl, path, method, lam, split, args, seed)
                    val_accuracy, val_loss = evaluate(keras, model, *split["val"])
                    key = (val_accuracy, -val_loss)
                    if best is None or key > best[0]:
                        best = (key, lam, evaluate(keras, model, *split["test"])[0], moved(keras, model, w0))
                _, lam, test_accuracy, distance = best
                results[method]["lambda"].append(lam)
                results[method]["test_accuracy"].append(test_accuracy)
                results[method]["moved"].append(distance)
    names = {"plain": "plain fine-tuning", "l2": "L2 toward 0", "l2_sp": "L2-SP (toward w₀)"}
    print(f"digits 5-9 from a 0-4 model: {args.train} labelled examples, {args.seeds} draws, "
          f"λ chosen on {args.train} validation examples")
    print(f"{'method':<20} {'λ chosen':<22} {'test accuracy':<24} {'‖w − w₀‖/‖w₀‖':<14}")
    for method in METHODS:
        r = results[method]
        acc = np.array(r["test_accuracy"])
        lams = ", ".join(f"{v:g}" for v in r["lambda"])
        print(f"{names[method]:<20} {lams:<22} {acc.mean():.4f} ({acc.min():.4f}-{acc.max():.4f})"
              f"{'':<5} {np.mean(r['moved']):.3f}")
    sys.stdout.flush()
    return results


if __name__ == "__main__":
    main()
