"""The book's chapter-14 run, in Keras, with keras-l1l2plus.

*Neural Networks from Scratch in Python*, chapter 14, trains a 2-64-3
ReLU/softmax network on 3-class spiral data (100 samples a class), full
batch, 10 001 epochs, with Adam(learning rate 0.02, decay 5e-7) and L2 5e-4
on the first layer's weights and biases (the book's `dense1`; its `dense2` is
not regularized), then validates on a fresh spiral draw. It reports

    epoch: 10000, acc: 0.947, loss: 0.217 (data_loss: 0.157, reg_loss: 0.060)
    validation, acc: 0.830, loss: 0.435

This script does the same with `L1L2Plus` and `PenaltyLogger`, and prints its
figures beside the book's. Its data are its own draw (the book seeds numpy
through the `nnfs` package, which this example does not use), so the figures
agree to sampling noise, not digit for digit.

    python examples/nnfs_spiral.py [--epochs 10001] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from _shared import load_keras

BOOK = {"acc": 0.947, "loss": 0.217, "data_loss": 0.157, "reg_loss": 0.060,
        "val_acc": 0.830, "val_loss": 0.435}


def spiral_data(samples: int, classes: int, rng: np.random.Generator):
    """The book's spiral: class k's points at radius r ∈ [0, 1], angle 2.5·t,
    t = linspace(4k, 4(k+1)) + N(0, 0.2²) noise."""
    x = np.zeros((samples * classes, 2), dtype="float32")
    y = np.zeros(samples * classes, dtype="int32")
    for k in range(classes):
        ix = slice(samples * k, samples * (k + 1))
        r = np.linspace(0.0, 1.0, samples)
        t = np.linspace(k * 4, (k + 1) * 4, samples) + rng.normal(size=samples) * 0.2
        x[ix] = np.c_[r * np.sin(t * 2.5), r * np.cos(t * 2.5)]
        y[ix] = k
    return x, y


def build_model():
    """2-64-3, weights 0.01·N(0, 1) and zero biases as in the book."""
    import keras

    import keras_l1l2plus as kl

    init = keras.initializers.RandomNormal(stddev=0.01)
    model = keras.Sequential([
        keras.Input((2,)),
        keras.layers.Dense(64, activation="relu", kernel_initializer=init,
                           kernel_regularizer=kl.L1L2Plus(l2=5e-4),
                           bias_regularizer=kl.L1L2Plus(l2=5e-4), name="dense1"),
        keras.layers.Dense(3, activation="softmax", kernel_initializer=init, name="dense2"),
    ])
    # The book's decay: lr_t = lr / (1 + decay · iterations).
    schedule = keras.optimizers.schedules.InverseTimeDecay(0.02, decay_steps=1, decay_rate=5e-7)
    model.compile(optimizer=keras.optimizers.Adam(schedule, epsilon=1e-7),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def print_every(n):
    """A callback that prints the book's progress line every `n` epochs."""
    import keras

    def on_epoch_end(epoch, logs):
        if epoch % n == 0:
            print(f"epoch: {epoch}, acc: {logs['accuracy']:.3f}, loss: {logs['loss']:.3f} "
                  f"(data_loss: {logs['data_loss']:.3f}, reg_loss: {logs['penalty']:.3f})")

    return keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10001)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--print-every", type=int, default=1000)
    args = parser.parse_args(argv)  # before Keras loads: --help answers at once
    keras = load_keras()
    import keras_l1l2plus as kl

    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x, y = spiral_data(100, 3, rng)
    x_test, y_test = spiral_data(100, 3, rng)  # a fresh draw, as the book's validation

    model = build_model()
    history = model.fit(x, y, batch_size=len(x), epochs=args.epochs, shuffle=False, verbose=0,
                        callbacks=[kl.PenaltyLogger(update_freq="epoch"), print_every(args.print_every)])
    last = {k: v[-1] for k, v in history.history.items()}
    # The book's last line is measured before its last update, like fit's logs;
    # its validation uses the weights after it, like evaluate.
    val = model.evaluate(x_test, y_test, verbose=0, return_dict=True)
    penalty = float(kl.penalty_terms(model)["penalty"])
    ours = {"acc": last["accuracy"], "loss": last["loss"], "data_loss": last["data_loss"],
            "reg_loss": last["penalty"], "val_acc": val["accuracy"], "val_loss": val["loss"] - penalty}
    ours_header = f"keras-l1l2plus, {args.epochs} epochs"
    print(f"\n{'':<22} {'book, 10001 epochs':>18}    {ours_header}")
    for key, label in (("acc", "train accuracy"), ("loss", "train loss"), ("data_loss", "train data loss"),
                       ("reg_loss", "L2 penalty"), ("val_acc", "validation accuracy"),
                       ("val_loss", "validation data loss")):
        print(f"{label:<22} {BOOK[key]:>18.3f}    {ours[key]:>{len(ours_header)}.3f}")
    if args.epochs != 10001:
        print(f"(the book's figures are after 10001 epochs, ours after {args.epochs}: not comparable)")
    return ours


if __name__ == "__main__":
    main()
    sys.exit(0)
