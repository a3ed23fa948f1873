"""L1 as feature selection: which of the 30 breast-cancer features survive as λ grows.

Logistic regression (one Dense unit, sigmoid) on scikit-learn's bundled
Wisconsin breast-cancer data (569 samples, 30 standardized features), with a
proximal L1 penalty on the weights (`L1L2Plus(proximal=True)` and a
`ProximalOptimizer` around SGD), trained full batch: proximal gradient
descent. A feature whose weight is exactly 0 is not used by the model. For
each λ the script prints how many features survive, which, and the
validation accuracy.

    python examples/breast_cancer_features.py [--lambdas 0.001,0.01,0.1] [--steps 2000]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from _shared import load_keras


def load_data(seed=0):
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    data = load_breast_cancer()
    x_train, x_val, y_train, y_val = train_test_split(
        data.data, data.target, test_size=0.25, random_state=seed, stratify=data.target)
    mean, std = x_train.mean(0), x_train.std(0)
    scale = lambda x: ((x - mean) / std).astype("float32")  # noqa: E731
    return (scale(x_train), y_train.astype("float32")), (scale(x_val), y_val.astype("float32")), data.feature_names


def full_batch(x, y, steps):
    """The whole training set as one batch, `steps` times: full-batch gradient descent."""
    import keras

    class FullBatch(keras.utils.PyDataset):
        def __len__(self):
            return steps

        def __getitem__(self, index):
            return x, y

    return FullBatch()


def select(l1, train, val, steps, learning_rate):
    """Fits the L1-regularized logistic regression; returns (weights, validation accuracy)."""
    import keras

    import keras_l1l2plus as kl

    keras.utils.set_random_seed(0)
    (x, y), (x_val, y_val) = train, val
    model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(1, activation="sigmoid")])
    kl.regularize(model, l1_weight=l1, proximal_weight=True)
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.SGD(learning_rate)), loss="binary_crossentropy",
                  metrics=["accuracy"],
                  steps_per_execution=100 if keras.backend.backend() != "torch" else 1)  # PyTorch: 1 only
    model.fit(full_batch(x, y[:, None], steps), epochs=1, verbose=0)
    accuracy = model.evaluate(x_val, y_val[:, None], verbose=0, return_dict=True)["accuracy"]
    return model.layers[0].kernel.numpy()[:, 0], accuracy


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lambdas", default="0.0003,0.001,0.003,0.01,0.03,0.1",
                        help="comma-separated λ1 values")
    parser.add_argument("--steps", type=int, default=2000, help="full-batch proximal SGD steps per λ")
    parser.add_argument("--learning-rate", type=float, default=0.5)
    args = parser.parse_args(argv)  # before Keras loads: --help answers at once
    load_keras()
    train, val, names = load_data()
    rows = []
    print("| λ1 | features kept | validation accuracy | kept (largest |w| first) |")
    print("|---:|---:|---:|---|")
    for l1 in (float(v) for v in args.lambdas.split(",")):
        w, accuracy = select(l1, train, val, args.steps, args.learning_rate)
        kept = [i for i in np.argsort(-np.abs(w)) if w[i] != 0]
        rows.append({"l1": l1, "kept": [str(names[i]) for i in kept], "accuracy": accuracy, "weights": w})
        shown = ", ".join(str(names[i]) for i in kept[:8]) + (", ..." if len(kept) > 8 else "")
        print(f"| {l1:g} | {len(kept)} / {len(w)} | {accuracy:.3f} | {shown} |")
    return rows


if __name__ == "__main__":
    main()
    sys.exit(0)
