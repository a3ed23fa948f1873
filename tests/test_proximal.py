"""The proximal L1 step: exact zeros, against scikit-learn's Lasso and ElasticNet."""

import json
import warnings

import keras
import numpy as np
import pytest
from backends import BACKEND, custom_loop, only_on, slow_on, steps_per_execution, to_numpy, value_and_grad

# 1000-3000 full-batch steps through `fit`: Keras's JAX trainer spends ~20 ms of
# Python per step on this CPU (or minutes compiling unrolled steps_per_execution).
FIT_MANY_STEPS = slow_on("jax")

import keras_l1l2plus as kl
from keras_l1l2plus import L1L2Plus
from keras_l1l2plus.proximal import soft_threshold

L = keras.layers


def numpy_soft_threshold(w, t):
    return np.sign(w) * np.maximum(np.abs(w) - t, 0)


def test_soft_threshold():
    w = np.array([-2.0, -0.5, 0.0, 0.3, 1.5], "float32")
    t = np.array([1.0, 1.0, 1.0, 0.1, 2.0], "float32")
    np.testing.assert_allclose(to_numpy(soft_threshold(w, t)), numpy_soft_threshold(w, t), atol=1e-7)
    np.testing.assert_array_equal(to_numpy(soft_threshold(w, 1.0)) == 0, [False, True, True, True, False])


# --- a linear regression with a known L1 / elastic-net solution ------------------


def regression_problem(seed=0, n=200, p=10):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p))
    x = (x - x.mean(0)) / x.std(0)
    true_w = np.array([3.0, -2.0, 0.0, 0.0, 1.5, 0.0, 0.05, -0.05, 0.0, 0.8])[:p]
    y = x @ true_w + 1.0 + 0.5 * rng.normal(size=n)
    return x.astype("float32"), y.astype("float32")


def keras_objective(w, b, x, y, l1, l2):
    """What Keras minimises: mean squared error + l1·Σ|w| + l2·Σw² (float64)."""
    r = y.astype("float64") - x.astype("float64") @ w - b
    return np.mean(r**2) + l1 * np.abs(w).sum() + l2 * np.square(w).sum()


def sklearn_solution(x, y, l1, l2):
    """scikit-learn's solver on Keras's objective scaled by 1/2.

    Lasso / ElasticNet minimise 1/(2n)·‖r‖² + α·ρ·‖w‖₁ + α·(1−ρ)/2·‖w‖²;
    half of Keras's objective is 1/(2n)·‖r‖² + l1/2·‖w‖₁ + l2/2·‖w‖², so
    α·ρ = l1/2 and α·(1−ρ) = l2.
    """
    from sklearn.linear_model import ElasticNet, Lasso

    x64, y64 = x.astype("float64"), y.astype("float64")
    if l2 == 0:
        model = Lasso(alpha=l1 / 2, tol=1e-12, max_iter=1_000_000)
    else:
        alpha = l1 / 2 + l2
        model = ElasticNet(alpha=alpha, l1_ratio=(l1 / 2) / alpha, tol=1e-12, max_iter=1_000_000)
    model.fit(x64, y64)
    return model.coef_, float(model.intercept_)


def fit_linear(x, y, l1, l2, proximal, optimizer, steps, jit_compile=False, callbacks=()):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((x.shape[1],)), L.Dense(1, kernel_initializer="zeros")])
    kl.regularize(model, l1_weight=l1, l2_weight=l2, proximal_weight=proximal)
    if proximal:
        optimizer = kl.ProximalOptimizer(optimizer)
    model.compile(optimizer=optimizer, loss="mse", steps_per_execution=steps_per_execution(100),
                  jit_compile=jit_compile)
    # Full batch, `steps` times: the data tiled, one batch per copy.
    model.fit(np.tile(x, (steps, 1)), np.tile(y[:, None], (steps, 1)), batch_size=len(x), epochs=1,
              verbose=0, shuffle=False, callbacks=list(callbacks))
    return model.layers[0].kernel.numpy()[:, 0].astype("float64"), float(model.layers[0].bias.numpy()[0])


def lipschitz_step(x):
    """1/L for the MSE gradient over (w, b): L = 2·λmax([x 1]ᵀ[x 1]/n)."""
    xb = np.c_[x.astype("float64"), np.ones(len(x))]
    return 1.0 / (2 * np.linalg.eigvalsh(xb.T @ xb / len(x)).max())


@FIT_MANY_STEPS
@pytest.mark.parametrize("l1,l2", [(0.4, 0.0), (0.3, 0.1)], ids=["lasso", "elastic_net"])
def test_proximal_sgd_reaches_the_sklearn_solution(l1, l2):
    x, y = regression_problem()
    ref_w, ref_b = sklearn_solution(x, y, l1, l2)
    assert 0 < np.sum(ref_w == 0) < len(ref_w)  # a problem with some, not all, zeros
    w, b = fit_linear(x, y, l1, l2, True, keras.optimizers.SGD(lipschitz_step(x)), 3000)
    np.testing.assert_array_equal(w == 0, ref_w == 0)
    np.testing.assert_allclose(w, ref_w, atol=1e-3)
    assert b == pytest.approx(ref_b, abs=1e-3)
    ours, theirs = keras_objective(w, b, x, y, l1, l2), keras_objective(ref_w, ref_b, x, y, l1, l2)
    assert ours == pytest.approx(theirs, rel=1e-4)


@FIT_MANY_STEPS
def test_subgradient_mode_ends_with_no_exact_zeros():
    x, y = regression_problem()
    ref_w, ref_b = sklearn_solution(x, y, 0.4, 0.0)
    w, b = fit_linear(x, y, 0.4, 0.0, False, keras.optimizers.SGD(lipschitz_step(x)), 3000)
    assert np.sum(ref_w == 0) >= 3
    assert np.sum(w == 0) == 0  # the would-be zeros hover around 0 and never land on it
    assert np.abs(w[ref_w == 0]).min() > 1e-4
    # ...and the iterate stays away from the optimum that the proximal step reaches.
    assert keras_objective(w, b, x, y, 0.4, 0.0) > keras_objective(ref_w, ref_b, x, y, 0.4, 0.0) * 1.001


@FIT_MANY_STEPS
def test_proximal_adam_gives_exact_zeros_near_the_lasso_optimum():
    x, y = regression_problem()
    ref_w, ref_b = sklearn_solution(x, y, 0.4, 0.0)
    schedule = keras.optimizers.schedules.InverseTimeDecay(0.05, decay_steps=100, decay_rate=1.0)
    w, b = fit_linear(x, y, 0.4, 0.0, True, keras.optimizers.Adam(schedule), 3000)
    np.testing.assert_array_equal(w == 0, ref_w == 0)
    optimum = keras_objective(ref_w, ref_b, x, y, 0.4, 0.0)
    assert keras_objective(w, b, x, y, 0.4, 0.0) == pytest.approx(optimum, rel=1e-3)


# --- the threshold of each optimizer, one step against numpy ---------------------


def one_step(optimizer, l1=0.05, seed=0, threshold="adaptive"):
    """One proximal step from fixed weights on a model whose data gradient is known."""
    rng = np.random.default_rng(seed)
    kernel = rng.normal(size=(4, 3)).astype("float32") * 0.1
    x = rng.normal(size=(8, 4)).astype("float32")
    y = rng.normal(size=(8, 3)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, use_bias=False, kernel_initializer="zeros",
                                                          kernel_regularizer=L1L2Plus(l1=l1, proximal=True))])
    model.layers[0].kernel.assign(kernel)
    model.compile(optimizer=kl.ProximalOptimizer(optimizer, threshold=threshold), loss="mse")
    grad = 2 * x.T.astype("float64") @ (x @ kernel - y) / y.size  # d mse / d kernel, no L1 part
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    return kernel.astype("float64"), grad, model.layers[0].kernel.numpy()


def test_sgd_threshold_is_learning_rate_times_l1():
    w, g, new = one_step(keras.optimizers.SGD(0.5))
    np.testing.assert_allclose(new, numpy_soft_threshold(w - 0.5 * g, 0.5 * 0.05), atol=1e-6)
    assert (new == 0).sum() > 0


def test_adam_threshold_is_the_per_coordinate_step():
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-7
    w, g, new = one_step(keras.optimizers.Adam(lr, beta_1=b1, beta_2=b2, epsilon=eps))
    m, v = (1 - b1) * g, (1 - b2) * g**2
    alpha = lr * np.sqrt(1 - b2) / (1 - b1)
    stepped = w - alpha * m / (np.sqrt(v) + eps)
    eta = lr * np.sqrt(1 - b2) / (np.sqrt(v) + eps)
    np.testing.assert_allclose(new, numpy_soft_threshold(stepped, 0.05 * eta), rtol=1e-5, atol=1e-6)
    assert (new == 0).sum() > 0


def test_rmsprop_and_adagrad_thresholds():
    lr, rho, eps = 0.01, 0.9, 1e-7
    w, g, new = one_step(keras.optimizers.RMSprop(lr, rho=rho, epsilon=eps))
    v = (1 - rho) * g**2
    eta = lr / np.sqrt(v + eps)
    np.testing.assert_allclose(new, numpy_soft_threshold(w - eta * g, 0.05 * eta), rtol=1e-5, atol=1e-6)
    w, g, new = one_step(keras.optimizers.Adagrad(lr, initial_accumulator_value=0.1, epsilon=eps))
    eta = lr / np.sqrt(0.1 + g**2 + eps)
    np.testing.assert_allclose(new, numpy_soft_threshold(w - eta * g, 0.05 * eta), rtol=1e-5, atol=1e-6)


def test_unknown_optimizer_warns_and_uses_the_learning_rate():
    with pytest.warns(UserWarning, match="Adadelta.*l1 × learning rate"):
        w, g, new = one_step(keras.optimizers.Adadelta(1.0))
    assert np.isfinite(new).all()


def test_learning_rate_schedule_is_read_at_each_step():
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([0], [1.0, 0.25])  # 1.0 at step 0, then 0.25
    model = keras.Sequential([keras.Input((1,)), L.Dense(1, use_bias=False, kernel_initializer="ones",
                                                          kernel_regularizer=L1L2Plus(l1=0.1, proximal=True))])
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.SGD(schedule)), loss="mse")
    x = np.zeros((1, 1), "float32")  # data gradient 0: only the proximal step moves the weight
    model.fit(x, x, epochs=3, verbose=0)
    assert float(model.layers[0].kernel.numpy()[0, 0]) == pytest.approx(1.0 - 0.1 * (1.0 + 0.25 + 0.25), abs=1e-7)


# --- no double counting, config, lifecycle ---------------------------------------


def test_l1_counts_once_in_the_loss_and_not_in_the_gradient():
    reg = L1L2Plus(l1=0.3, l2=0.2, proximal=True)
    v = np.array([[1.0, -2.0], [0.0, 0.5]], "float32")
    penalty, grad = value_and_grad(reg, v)
    expected = 0.3 * 3.5 + 0.2 * (1 + 4 + 0.25)
    assert float(penalty) == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(to_numpy(grad), 2 * 0.2 * v, rtol=1e-6)


@pytest.mark.parametrize("zero_grad", [0.0, 1.0, -0.5])
def test_zero_grad_is_accepted_and_unused_in_proximal_mode(zero_grad):
    reg = L1L2Plus(l1=0.3, zero_grad=zero_grad, proximal=True)
    v = np.array([0.0, 1.0, -2.0, 0.0], "float32")
    penalty, grad = value_and_grad(reg, v)
    assert float(penalty) == pytest.approx(0.9, rel=1e-6)
    np.testing.assert_array_equal(to_numpy(grad), np.zeros(4))
    # The proximal step keeps exact zeros where the data gradient is small.
    np.testing.assert_array_equal(to_numpy(soft_threshold(v - 0.01, 0.3))[[0, 3]], [0.0, 0.0])


def test_loss_logs_include_the_l1_term_once():
    x, y = regression_problem(n=40)
    model = keras.Sequential([keras.Input((10,)), L.Dense(1, kernel_regularizer=L1L2Plus(l1=0.5, proximal=True))])
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.SGD(0.0)), loss="mse")  # weights stay put
    history = model.fit(x, y[:, None], batch_size=40, epochs=1, verbose=0,
                        callbacks=[kl.PenaltyLogger()]).history
    w = model.layers[0].kernel.numpy().astype("float64")
    assert history["l1_weight"][0] == pytest.approx(0.5 * np.abs(w).sum(), rel=1e-6)
    assert history["loss"][0] == pytest.approx(history["data_loss"][0] + history["l1_weight"][0], rel=1e-6)


def test_config_and_keras_file_keep_the_mode(tmp_path):
    reg = L1L2Plus(l1=0.1, proximal=True)
    assert reg.get_config() == {"l1": 0.1, "l2": 0.0, "zero_grad": 0.0, "proximal": True}
    assert repr(reg) == "L1L2Plus(l1=0.1, l2=0.0, zero_grad=0.0, proximal=True)"
    assert L1L2Plus.from_config(reg.get_config()) == reg
    assert L1L2Plus.from_config({"l1": 0.1}) == L1L2Plus(l1=0.1)  # configs from before the mode
    with pytest.raises(TypeError, match="proximal"):
        L1L2Plus(l1=0.1, proximal="yes")
    model = keras.Sequential([keras.Input((3,)), L.Dense(2)])
    kl.regularize(model, l1_weight=0.1, l1_bias=0.2, proximal_weight=True)
    assert model.layers[0].kernel_regularizer == L1L2Plus(l1=0.1, proximal=True)
    assert model.layers[0].bias_regularizer == L1L2Plus(l1=0.2)
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    assert restored.layers[0].kernel_regularizer == L1L2Plus(l1=0.1, proximal=True)


def test_own_constraints_still_apply_and_are_restored_after_fit():
    constraint = keras.constraints.NonNeg()
    model = keras.Sequential([keras.Input((10,)), L.Dense(1, kernel_constraint=constraint)])
    kl.regularize(model, l1_weight=0.4, proximal_weight=True)
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.SGD(0.05)), loss="mse")
    x, y = regression_problem()
    model.fit(x, y[:, None], batch_size=50, epochs=5, verbose=0)
    kernel = model.layers[0].kernel
    assert (kernel.numpy() >= 0).all() and (kernel.numpy() == 0).sum() >= 4
    assert kernel.constraint is constraint
    assert model.layers[0].kernel_constraint is constraint


def test_proximal_without_a_proximal_optimizer_warns_in_the_logger():
    model = keras.Sequential([keras.Input((10,)), L.Dense(1)])
    kl.regularize(model, l1_weight=0.4, proximal_weight=True)
    model.compile(optimizer="sgd", loss="mse")
    x, y = regression_problem(n=20)
    with pytest.warns(UserWarning, match="not a ProximalOptimizer"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger()])
    model.compile(optimizer=kl.ProximalOptimizer("sgd"), loss="mse")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model.fit(x, y, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger()])


def test_the_removed_callback_says_what_replaces_it():
    from keras_l1l2plus import ProximalL1  # old code's import still works, and says what replaced it

    with pytest.raises(TypeError, match="ProximalOptimizer"):
        ProximalL1()
    assert "ProximalL1" not in kl.__all__


@pytest.mark.parametrize("jit_compile", [False, True])
def test_sparsity_metrics_and_jit(jit_compile):
    if jit_compile and BACKEND == "torch":
        pytest.skip("torch.compile takes minutes here; test_fit_step_uses_the_defined_gradient covers it")
    x, y = regression_problem()
    model = keras.Sequential([keras.Input((10,)), L.Dense(4, kernel_initializer="glorot_uniform"), L.Dense(1)])
    kl.regularize(model, l1_weight=0.05, l1_bias=0.05, proximal_weight=True, proximal_bias=True)
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.SGD(0.05)), loss="mse", jit_compile=jit_compile)

    class LastWeights(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.weights = [v.numpy() for v in self.model.trainable_weights]

    last = LastWeights()
    history = model.fit(x, y[:, None], batch_size=50, epochs=20, verbose=0, shuffle=False,
                        callbacks=[kl.PenaltyLogger(), last]).history
    kernels = [last.weights[0], last.weights[2]]
    biases = [last.weights[1], last.weights[3]]
    expected_w = sum((k == 0).sum() for k in kernels) / sum(k.size for k in kernels)
    expected_b = sum((b == 0).sum() for b in biases) / sum(b.size for b in biases)
    assert expected_w > 0.1  # the proximal step made exact zeros
    assert history["sparsity_weight"][-1] == pytest.approx(expected_w, abs=1e-7)
    assert history["sparsity_bias"][-1] == pytest.approx(expected_b, abs=1e-7)
    assert history["sparsity_weight"][-1] >= history["sparsity_weight"][0]


@FIT_MANY_STEPS
def test_mixed_precision():
    keras.config.set_dtype_policy("mixed_float16")
    x, y = regression_problem()
    w, b = fit_linear(x, y, 0.4, 0.0, True, keras.optimizers.SGD(lipschitz_step(x)), 1000)
    ref_w, _ = sklearn_solution(x, y, 0.4, 0.0)
    np.testing.assert_array_equal(w == 0, ref_w == 0)
    np.testing.assert_allclose(w, ref_w, atol=1e-2)


@pytest.mark.slow
@only_on("tensorflow", reason="tf.distribute.MirroredStrategy")
def test_mirrored_strategy_matches_single_device(fresh_python):
    out = fresh_python(
        """
        import json
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras, numpy as np
        import keras_l1l2plus as kl

        rng = np.random.default_rng(0)
        x = rng.normal(size=(64, 10)).astype("float32")
        y = (x[:, :3] @ np.array([2.0, -1.0, 0.5], "float32"))[:, None]

        def run(strategy, optimizer):
            with strategy.scope():
                model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(1, kernel_initializer="ones")])
                kl.regularize(model, l1_weight=0.3, proximal_weight=True)
                model.compile(optimizer=kl.ProximalOptimizer(optimizer()), loss="mse")
            h = model.fit(x, y, batch_size=16, epochs=30, shuffle=False, verbose=0,
                          callbacks=[kl.PenaltyLogger()]).history
            return model.layers[0].kernel.numpy().ravel().tolist(), h["sparsity_weight"]

        mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        result = {}
        for name, opt in (("sgd", lambda: keras.optimizers.SGD(0.05)), ("adam", lambda: keras.optimizers.Adam(0.05))):
            result[name] = {"single": run(tf.distribute.get_strategy(), opt), "mirrored": run(mirrored, opt)}
        print(json.dumps(result))
        """
    )
    result = json.loads(out.strip().splitlines()[-1])
    for name, runs in result.items():
        (w1, s1), (w2, s2) = runs["single"], runs["mirrored"]
        np.testing.assert_allclose(w2, w1, rtol=1e-4, atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(np.array(w2) == 0, np.array(w1) == 0)
        assert sum(np.array(w1) == 0) >= 3, name
        np.testing.assert_allclose(s2, s1)


# --- ProximalOptimizer: the step in the optimizer's update -------------------------


def test_gradient_accumulation_thresholds_once_per_real_update():
    x, y = regression_problem(n=16, p=4)
    lr, l1, steps = 0.1, 0.3, 2
    model = keras.Sequential([keras.Input((4,)), L.Dense(1, use_bias=False, kernel_initializer="ones",
                                                          kernel_regularizer=L1L2Plus(l1=l1, proximal=True))])
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.SGD(lr, gradient_accumulation_steps=steps)),
                  loss="mse")
    model.fit(x, y[:, None], batch_size=2, epochs=1, verbose=0, shuffle=False)
    # numpy ISTA: one update per two micro-batches, with their mean gradient.
    w = np.ones(4)
    x64, y64 = x.astype("float64"), y.astype("float64")
    for start in range(0, 16, 2 * steps):
        grads = [2 * xb.T @ (xb @ w - yb) / len(yb)
                 for xb, yb in ((x64[i:i + 2], y64[i:i + 2]) for i in range(start, start + 2 * steps, 2))]
        w = numpy_soft_threshold(w - lr * np.mean(grads, axis=0), lr * l1)
    np.testing.assert_allclose(model.layers[0].kernel.numpy()[:, 0], w, rtol=1e-5, atol=1e-6)


def test_zero_data_gradient_with_accumulation_shrinks_once_per_update():
    model = keras.Sequential([keras.Input((1,)), L.Dense(1, use_bias=False, kernel_initializer="ones",
                                                          kernel_regularizer=L1L2Plus(l1=0.5, proximal=True))])
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.SGD(0.1, gradient_accumulation_steps=2)),
                  loss="mse")
    x = np.zeros((8, 1), "float32")
    model.fit(x, x, batch_size=2, epochs=1, verbose=0)  # 4 micro-steps, 2 real updates
    assert float(model.layers[0].kernel.numpy()[0, 0]) == pytest.approx(1.0 - 2 * 0.1 * 0.5, abs=1e-7)


def lasso_model_with_ema():
    """The regression's linear model, proximal L1 0.4, SGD with an EMA of momentum 0.9."""
    model = keras.Sequential([keras.Input((10,)), L.Dense(1, kernel_initializer="zeros")])
    kl.regularize(model, l1_weight=0.4, proximal_weight=True)
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.SGD(0.05, use_ema=True, ema_momentum=0.9)),
                  loss="mse")
    return model


def test_ema_keeps_the_zeros_of_the_final_weights():
    x, y = regression_problem()
    model = lasso_model_with_ema()

    class LastWeights(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):  # before Keras swaps in the EMA
            self.kernel = self.model.layers[0].kernel.numpy().copy()

    last = LastWeights()
    history = model.fit(x, y[:, None], batch_size=50, epochs=30, verbose=0, shuffle=False,
                        callbacks=[kl.PenaltyLogger(), last]).history
    returned = model.layers[0].kernel.numpy()
    assert (last.kernel == 0).sum() >= 3
    np.testing.assert_array_equal(returned == 0, last.kernel == 0)
    # The logs' sparsity is that of the weights the last step's loss used (before its update).
    assert history["sparsity_weight"][-1] > 0.2


def embedding_model(optimizer, l1, threshold="adaptive"):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1,), dtype="int32"),
                              L.Embedding(1000, 8, embeddings_regularizer=L1L2Plus(l1=l1, proximal=True)),
                              L.Flatten()])
    model.compile(optimizer=kl.ProximalOptimizer(optimizer, threshold=threshold), loss="mse")
    return model


def test_adam_step_on_an_embedding_against_numpy_and_unseen_rows_kept():
    lr, b1, b2, eps, l1 = 1e-3, 0.9, 0.999, 1e-7, 1e-4
    rng = np.random.default_rng(0)
    ids = rng.choice(1000, size=10, replace=False).astype("int32")[:, None]
    targets = rng.normal(size=(10, 8)).astype("float32")
    model = embedding_model(keras.optimizers.Adam(lr, beta_1=b1, beta_2=b2, epsilon=eps), l1)
    table = model.layers[0].embeddings.numpy().astype("float64")
    model.fit(ids, targets, batch_size=10, epochs=1, verbose=0)
    # numpy: the mse gradient reaches the 10 seen rows only.
    g = np.zeros_like(table)
    np.add.at(g, ids[:, 0], 2 * (table[ids[:, 0]] - targets) / targets.size)
    m, v = (1 - b1) * g, (1 - b2) * g**2
    stepped = table - lr * np.sqrt(1 - b2) / (1 - b1) * m / (np.sqrt(v) + eps)
    eta = np.where(v == 0, lr, lr * np.sqrt(1 - b2) / (np.sqrt(v) + eps))
    expected = numpy_soft_threshold(stepped, l1 * eta)
    np.testing.assert_allclose(model.layers[0].embeddings.numpy(), expected, rtol=1e-6, atol=1e-7)  # float32 ulps
    # Unseen rows shrink by l1·lr a step, as under SGD: after 4 more steps, by 5·l1·lr in all.
    model.fit(ids, targets, batch_size=10, epochs=4, verbose=0)
    unseen = np.setdiff1d(np.arange(1000), ids[:, 0])
    after = model.layers[0].embeddings.numpy()[unseen]
    np.testing.assert_allclose(after, numpy_soft_threshold(table[unseen], 5 * l1 * lr), atol=1e-7)
    assert (after == 0).mean() < 0.01  # ProxGen's 1/ε step would have zeroed them all


def test_decoupled_threshold_is_l1_times_learning_rate_everywhere():
    lr, l1 = 0.1, 0.05
    w, g, new = one_step(keras.optimizers.Adam(lr), l1=l1, threshold="decoupled")
    b1, b2, eps = 0.9, 0.999, 1e-7
    m, v = (1 - b1) * g, (1 - b2) * g**2
    stepped = w - lr * np.sqrt(1 - b2) / (1 - b1) * m / (np.sqrt(v) + eps)
    np.testing.assert_allclose(new, numpy_soft_threshold(stepped, l1 * lr), rtol=1e-5, atol=1e-6)


def test_an_adam_subclass_gets_adams_threshold():
    class MyAdam(keras.optimizers.Adam):
        pass

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        w, g, ours = one_step(MyAdam(0.1))
    _, _, adams = one_step(keras.optimizers.Adam(0.1))
    np.testing.assert_array_equal(ours, adams)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="threshold.*'fast'"):
        kl.ProximalOptimizer("sgd", threshold="fast")
    with pytest.raises(TypeError, match="inner_optimizer.*LossScaleOptimizer"):
        kl.ProximalOptimizer(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD()))
    with pytest.raises(TypeError, match="inner_optimizer"):
        kl.ProximalOptimizer(3)
    with pytest.raises(TypeError, match="inner_optimizer=None"):
        kl.ProximalOptimizer(None)
    with pytest.raises(ValueError, match="weight_decay"):
        kl.ProximalOptimizer("adam", weight_decay=0.1)


def test_learning_rate_and_iterations_are_the_inner_optimizers():
    optimizer = kl.ProximalOptimizer(keras.optimizers.SGD(0.5))
    assert float(optimizer.learning_rate) == 0.5
    optimizer.learning_rate = 0.25  # what ReduceLROnPlateau and LearningRateScheduler do
    assert float(optimizer.inner_optimizer.learning_rate) == 0.25
    variable = keras.Variable(np.ones(3, "float32"))
    variable.regularizer = L1L2Plus(l1=1.0, proximal=True)
    optimizer.apply_gradients([(keras.ops.zeros(3), variable)])
    assert int(optimizer.iterations) == int(optimizer.inner_optimizer.iterations) == 1
    np.testing.assert_allclose(variable.numpy(), np.full(3, 0.75))


def test_custom_training_loop_reaches_the_lasso_solution():
    x, y = regression_problem()
    ref_w, ref_b = sklearn_solution(x, y, 0.4, 0.0)
    model = keras.Sequential([keras.Input((10,)), L.Dense(1, kernel_initializer="zeros")])
    kl.regularize(model, l1_weight=0.4, proximal_weight=True)
    optimizer = kl.ProximalOptimizer(keras.optimizers.SGD(lipschitz_step(x)))
    mse = keras.losses.MeanSquaredError()

    def loss():
        return mse(y[:, None], model(x, training=True)) + kl.penalty_terms(model)["penalty"]

    custom_loop(model, optimizer, loss, 3000)  # the backend's own loop (tests/backends.py)
    w, b = model.layers[0].kernel.numpy()[:, 0].astype("float64"), float(model.layers[0].bias.numpy()[0])
    np.testing.assert_array_equal(w == 0, ref_w == 0)
    ours, theirs = keras_objective(w, b, x, y, 0.4, 0.0), keras_objective(ref_w, ref_b, x, y, 0.4, 0.0)
    assert ours == pytest.approx(theirs, rel=1e-4)


@pytest.mark.slow
def test_keras_file_in_a_fresh_process_keeps_the_proximal_optimizer(tmp_path, fresh_python):
    x, y = regression_problem(n=64)
    model = keras.Sequential([keras.Input((10,)), L.Dense(1)])
    kl.regularize(model, l1_weight=0.3, proximal_weight=True)
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.Adam(0.05), threshold="decoupled"), loss="mse")
    model.fit(x, y[:, None], batch_size=16, epochs=3, verbose=0, shuffle=False)
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y[:, None])
    model.fit(x, y[:, None], batch_size=16, epochs=5, verbose=0, shuffle=False)
    out = fresh_python(
        f"""
        import json, keras, numpy as np
        import keras_l1l2plus as kl
        model = keras.models.load_model({str(tmp_path / "m.keras")!r})
        opt = model.optimizer
        x, y = np.load({str(tmp_path / "x.npy")!r}), np.load({str(tmp_path / "y.npy")!r})
        model.fit(x, y, batch_size=16, epochs=5, verbose=0, shuffle=False)
        print(json.dumps({{"type": type(opt).__name__, "inner": type(opt.inner_optimizer).__name__,
                          "threshold": opt.threshold, "iterations": int(opt.iterations),
                          "kernel": model.layers[0].kernel.numpy().ravel().tolist()}}))
        """
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert (result["type"], result["inner"], result["threshold"]) == ("ProximalOptimizer", "Adam", "decoupled")
    assert result["iterations"] == 32
    kernel = model.layers[0].kernel.numpy().ravel()
    assert (kernel == 0).sum() >= 3
    np.testing.assert_allclose(result["kernel"], kernel, rtol=1e-5, atol=1e-7)


def test_ema_is_kept_of_the_thresholded_weights():
    x, y = regression_problem(n=32, p=6)
    lr, l1, momentum, steps = 0.1, 0.6, 0.8, 25
    model = keras.Sequential([keras.Input((6,)), L.Dense(1, use_bias=False, kernel_initializer="ones",
                                                          kernel_regularizer=L1L2Plus(l1=l1, proximal=True))])
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.SGD(lr, use_ema=True, ema_momentum=momentum)),
                  loss="mse")
    model.fit(np.tile(x, (steps, 1)), np.tile(y[:, None], (steps, 1)), batch_size=32, epochs=1, verbose=0,
              shuffle=False)
    w, average = np.ones(6), None
    x64, y64 = x.astype("float64"), y.astype("float64")
    for _ in range(steps):
        w = numpy_soft_threshold(w - lr * 2 * x64.T @ (x64 @ w - y64) / len(y64), lr * l1)
        average = w.copy() if average is None else momentum * average + (1 - momentum) * w
        average = np.where(w == 0, 0.0, average)  # zero wherever the weight is
    assert (w == 0).sum() >= 2
    np.testing.assert_allclose(model.layers[0].kernel.numpy()[:, 0], average, rtol=1e-5, atol=1e-6)


def test_swap_ema_weights_callback_keeps_the_zeros():
    x, y = regression_problem()
    model = lasso_model_with_ema()
    model.fit(x, y[:, None], batch_size=50, epochs=30, verbose=0, shuffle=False, validation_split=0.2,
              callbacks=[keras.callbacks.SwapEMAWeights(swap_on_epoch=True)])
    assert (model.layers[0].kernel.numpy() == 0).sum() >= 3


def test_amsgrad_and_centered_rmsprop_thresholds():
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-7
    w, g, new = one_step(keras.optimizers.Adam(lr, amsgrad=True))
    v = (1 - b2) * g**2  # v̂max = v after one step
    stepped = w - lr * np.sqrt(1 - b2) / (1 - b1) * (1 - b1) * g / (np.sqrt(v) + eps)
    eta = lr * np.sqrt(1 - b2) / (np.sqrt(v) + eps)
    np.testing.assert_allclose(new, numpy_soft_threshold(stepped, 0.05 * eta), rtol=1e-5, atol=1e-6)
    lr, rho = 0.01, 0.9
    w, g, new = one_step(keras.optimizers.RMSprop(lr, rho=rho, epsilon=eps, centered=True))
    v, mg = (1 - rho) * g**2, (1 - rho) * g
    eta = lr / np.sqrt(v - mg**2 + eps)
    np.testing.assert_allclose(new, numpy_soft_threshold(w - eta * g, 0.05 * eta), rtol=1e-4, atol=1e-6)


def test_adagrad_without_an_initial_accumulator_uses_lr_where_no_gradient_came():
    lr, l1 = 0.1, 1e-3
    model = embedding_model(keras.optimizers.Adagrad(lr, initial_accumulator_value=0.0), l1)
    table = model.layers[0].embeddings.numpy().astype("float64")
    ids = np.arange(5, dtype="int32")[:, None]
    model.fit(ids, np.zeros((5, 8), "float32"), batch_size=5, epochs=1, verbose=0)
    unseen = model.layers[0].embeddings.numpy()[5:]
    np.testing.assert_allclose(unseen, numpy_soft_threshold(table[5:], l1 * lr), atol=1e-7)


def test_loss_scale_optimizer_outside_gives_the_same_steps():
    x, y = regression_problem(n=64)
    results = []
    for wrap in (False, True):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((10,)), L.Dense(1, kernel_initializer="zeros")])
        kl.regularize(model, l1_weight=0.3, proximal_weight=True)
        optimizer = kl.ProximalOptimizer(keras.optimizers.Adam(0.05))
        if wrap:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(x, y[:, None], batch_size=16, epochs=5, verbose=0, shuffle=False)
        results.append(model.layers[0].kernel.numpy())
    assert (results[0] == 0).sum() >= 3
    np.testing.assert_allclose(results[1], results[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(results[1] == 0, results[0] == 0)


def test_logged_sparsity_counts_only_the_variables_that_take_the_proximal_step():
    x, y = regression_problem()
    model = keras.Sequential([
        keras.Input((10,)),
        L.Dense(20, kernel_regularizer=kl.L1L2Plus(l1=10.0, proximal=True)),  # zeroed at the first step
        L.Dense(30, kernel_regularizer=kl.L1L2Plus(l1=1e-4)),  # subgradient L1: not counted
        L.Dense(1),
    ])
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.SGD(0.1)), loss="mse")
    history = model.fit(x, y[:, None], batch_size=50, epochs=2, verbose=0, callbacks=[kl.PenaltyLogger()]).history
    assert (model.layers[0].kernel.numpy() == 0).all()
    assert history["sparsity_weight"][-1] == 1.0  # not diluted by the 600 subgradient weights
    assert "sparsity_bias" not in history


def test_no_sparsity_keys_without_a_proximal_optimizer():
    x, y = regression_problem()
    model = keras.Sequential([keras.Input((10,)), L.Dense(1)])
    kl.regularize(model, l1_weight=0.05, proximal_weight=True)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    with pytest.warns(UserWarning, match="not a ProximalOptimizer"):
        history = model.fit(x, y[:, None], epochs=1, verbose=0, callbacks=[kl.PenaltyLogger()]).history
    assert not any(key.startswith("sparsity") for key in history)  # 0 by construction: the L1 does not act


def test_proximal_step_switched_on_mid_fit_warns_and_shows_sparsity_from_the_next_fit():
    x, y = regression_problem()
    model = keras.Sequential([keras.Input((10,)), L.Dense(4), L.Dense(1)])
    kl.regularize(model, l1_weight=0.5)
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.SGD(0.05)), loss="mse")
    switch_on = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: epoch == 1 and kl.regularize(model, l1_weight=0.5, proximal_weight=True))
    with pytest.warns(UserWarning, match="sparsity keys stay"):
        history = model.fit(x, y[:, None], epochs=2, verbose=0, callbacks=[kl.PenaltyLogger(), switch_on]).history
    assert "sparsity_weight" not in history
    history = model.fit(x, y[:, None], epochs=1, verbose=0, callbacks=[kl.PenaltyLogger()]).history
    assert "sparsity_weight" in history
