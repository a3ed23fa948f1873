"""A `tf.GradientTape` training loop with `penalty_terms` as its regularization loss.

TensorFlow backend only (it uses `tf.GradientTape`, `tf.data` and `tf.summary`);
on JAX and PyTorch the same loss goes into the backend's own gradient.

    loss = data_loss + penalty_terms(model)["penalty"]

Each term is written with `tf.summary` (TensorBoard: `tensorboard --logdir OUT`),
with the optimizer's iteration as the step, like Keras's own callbacks.

    python examples/custom_training_loop.py [--steps N] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from _shared import load_keras, tensorboard_command


def make_data(seed=0, n=512):
    """A noisy linear target with 20 inputs of which 5 matter."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 20)).astype("float32")
    w = np.zeros((20, 1), "float32")
    w[:5, 0] = rng.normal(size=5) * 2
    y = x @ w + 0.1 * rng.normal(size=(n, 1)).astype("float32")
    return x, y


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("out/custom_loop"))
    args = parser.parse_args(argv)  # before Keras loads: --help answers at once
    os.environ["KERAS_BACKEND"] = "tensorflow"  # the loop below is TensorFlow's
    keras = load_keras()
    import tensorflow as tf

    import keras_l1l2plus as kl

    keras.utils.set_random_seed(0)
    x, y = make_data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(512, seed=0).repeat().batch(64)

    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    kl.regularize(model, l1_weight=1e-3, l1_bias=1e-4, l2_weight=1e-3, l2_bias=1e-4)
    optimizer = keras.optimizers.Adam(1e-2)
    mse = keras.losses.MeanSquaredError()
    writer = tf.summary.create_file_writer(str(args.out))

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            data_loss = mse(y, model(x, training=True))
            terms = kl.penalty_terms(model)
            loss = data_loss + terms["penalty"]
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss, data_loss, terms

    with writer.as_default():
        for step, (xb, yb) in enumerate(dataset.take(args.steps)):
            loss, data_loss, terms = train_step(xb, yb)
            tf.summary.scalar("loss", loss, step=optimizer.iterations)
            tf.summary.scalar("data_loss", data_loss, step=optimizer.iterations)
            for name, value in terms.items():
                tf.summary.scalar(name, value, step=optimizer.iterations)
            if step % 100 == 0 or step == args.steps - 1:
                print(f"step {step}: loss {float(loss):.4f} = data_loss {float(data_loss):.4f} + "
                      + " + ".join(f"{k} {float(terms[k]):.4f}" for k in ("l1_weight", "l1_bias", "l2_weight", "l2_bias")))
    writer.flush()
    final = {k: float(v) for k, v in kl.penalty_terms(model).items()}
    final["data_loss"] = float(mse(y, model(x)))
    print(f"TensorBoard: {tensorboard_command(args.out)}")
    return final


if __name__ == "__main__":
    main()
    sys.exit(0)
