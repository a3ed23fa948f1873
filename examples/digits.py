"""Main job: an MLP on scikit-learn's bundled handwritten digits with all four λs.

    python examples/digits.py [--epochs N] [--l1-weight λ] [--l1-bias λ]
                              [--l2-weight λ] [--l2-bias λ] [--zero-grad g] [--out DIR]

Trains with `Loss = DataLoss + L1w + L1b + L2w + L2b`, saves the model as
`.keras`, reloads it and checks that predictions and `model.losses` match.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from keras_l1l2plus import L1L2Plus  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--l1-weight", type=float, default=1e-4)
    parser.add_argument("--l1-bias", type=float, default=1e-5)
    parser.add_argument("--l2-weight", type=float, default=1e-4)
    parser.add_argument("--l2-bias", type=float, default=1e-5)
    parser.add_argument("--zero-grad", type=float, default=0.0)
    parser.add_argument("--out", type=Path, default=Path("out/digits"))
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def load_data(seed):
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int32")
    return train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)


def build_model(args):
    weight_reg = L1L2Plus(l1=args.l1_weight, l2=args.l2_weight, zero_grad=args.zero_grad)
    bias_reg = L1L2Plus(l1=args.l1_bias, l2=args.l2_bias, zero_grad=args.zero_grad)
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu", kernel_regularizer=weight_reg,
                               bias_regularizer=bias_reg),
            keras.layers.Dense(64, activation="relu", kernel_regularizer=weight_reg,
                               bias_regularizer=bias_reg),
            keras.layers.Dense(10, activation="softmax", kernel_regularizer=weight_reg,
                               bias_regularizer=bias_reg),
        ],
        name="digits_mlp",
    )


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    x_train, x_test, y_train, y_test = load_data(args.seed)
    model = build_model(args)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, validation_split=0.2, epochs=args.epochs, batch_size=32, verbose=2)

    path = args.out / "digits.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(reloaded.predict(x_test, verbose=0), model.predict(x_test, verbose=0),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose([float(v) for v in reloaded.losses],
                               [float(v) for v in model.losses], rtol=1e-6)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"saved {path}; reloaded model matches (predictions and model.losses)")
    print(f"test accuracy: {accuracy:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
