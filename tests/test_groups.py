"""The group lasso: its value and gradient against numpy, the proximal group step, scikit-learn's MultiTaskLasso."""

import json
from textwrap import dedent

import keras
import numpy as np
import pytest
from backends import custom_loop, dtype_name, steps_per_execution, to_numpy, value_and_grad

import keras_l1l2plus as kl
from keras_l1l2plus import L1L2Plus
from keras_l1l2plus.proximal import group_scale
from keras_l1l2plus.regularizer import group_axes

L = keras.layers


def numpy_group_norms(w, groups):
    """‖w_g‖₂ per group, float64: "units" over every axis but the last, "inputs" every axis but the second to last."""
    w = np.asarray(w, "float64")
    if groups == "units":
        return np.sqrt(np.square(w).reshape(-1, w.shape[-1]).sum(0)) if w.ndim > 1 else np.abs(w)
    moved = np.moveaxis(w, -2, 0)
    return np.sqrt(np.square(moved).reshape(moved.shape[0], -1).sum(1))


def numpy_group_gradient(w, groups):
    """x_g/‖x_g‖, 0 at a zero group."""
    w = np.asarray(w, "float64")
    norms = numpy_group_norms(w, groups)
    safe = np.where(norms == 0, 1.0, norms)
    if groups == "units":
        return w / safe if w.ndim <= 1 else w / safe.reshape((1,) * (w.ndim - 1) + (-1,))
    shape = [1] * w.ndim
    shape[-2] = -1
    return w / safe.reshape(shape)


def kernel_with_a_dead_unit(shape=(4, 3), dead_column=1, dead_row=None, seed=0):
    w = np.random.default_rng(seed).normal(size=shape).astype("float32")
    w[..., dead_column] = 0
    if dead_row is not None:
        w[..., dead_row, :] = 0
    return w


# --- the penalty ---------------------------------------------------------------------


@pytest.mark.parametrize("groups", ["units", "inputs"])
@pytest.mark.parametrize("shape", [(4, 3), (3, 3, 2, 4)], ids=["dense", "conv2d"])
@pytest.mark.parametrize("mode", ["eager", "compiled", "xla"])
@pytest.mark.parametrize("l2", [0.0, 0.05], ids=["l1", "l1_l2"])  # with L2: the norms from its squares
def test_value_and_gradient_against_numpy(groups, shape, mode, l2):
    w = kernel_with_a_dead_unit(shape, dead_column=1, dead_row=0)  # a dead unit and a dead input feature
    l1, group = 0.01, 0.3
    value, grad = value_and_grad(L1L2Plus(l1=l1, l2=l2, group=group, groups=groups), w, mode)
    norms = numpy_group_norms(w, groups)
    assert (norms == 0).sum() == 1  # the problem has one zero group
    expected_value = l1 * np.abs(w).sum() + l2 * np.square(w.astype("float64")).sum() + group * norms.sum()
    assert float(to_numpy(value)) == pytest.approx(expected_value, rel=1e-6)
    expected = l1 * np.sign(w) + 2 * l2 * w + group * numpy_group_gradient(w, groups)
    np.testing.assert_allclose(to_numpy(grad), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("l2", [0.0, 0.05])
def test_a_proximal_group_term_counts_in_the_value_and_not_in_the_gradient(l2):
    w = kernel_with_a_dead_unit((5, 3))
    value, grad = value_and_grad(L1L2Plus(l1=0.01, l2=l2, group=0.3, proximal=True), w)
    expected = 0.01 * np.abs(w).sum() + l2 * np.square(w.astype("float64")).sum()
    expected += 0.3 * numpy_group_norms(w, "units").sum()
    assert float(to_numpy(value)) == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(to_numpy(grad), 2 * l2 * w, rtol=1e-6, atol=1e-8)


def test_the_gradient_at_a_zero_group_is_zero():
    w = np.zeros((5, 2), "float32")
    w[:, 1] = [1.0, 2.0, 0.0, -2.0, 4.0]  # ‖w_1‖ = 5
    _, grad = value_and_grad(L1L2Plus(group=1.0), w)
    grad = to_numpy(grad)
    np.testing.assert_array_equal(grad[:, 0], np.zeros(5))  # defined 0, like |x|'s gradient at 0
    np.testing.assert_allclose(grad[:, 1], w[:, 1] / 5.0, rtol=1e-6)


def test_units_groups_of_a_vector_are_its_entries():
    b = np.array([0.5, -2.0, 0.0], "float32")
    value, grad = value_and_grad(L1L2Plus(group=0.5), b)
    assert float(to_numpy(value)) == pytest.approx(0.5 * 2.5)
    np.testing.assert_array_equal(to_numpy(grad), [0.5, -0.5, 0.0])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_is_summed_in_float32(dtype):
    w = np.full((4096, 2), 8.0, "float32")  # Σw² per group = 262144: beyond float16's 65504
    value, grad = value_and_grad(L1L2Plus(group=1.0), keras.ops.cast(w, dtype))
    assert dtype_name(value) == "float32" and dtype_name(grad) == dtype
    assert float(to_numpy(value)) == pytest.approx(2 * 8.0 * 64.0, rel=1e-6)  # 2 groups of ‖·‖ = 512
    np.testing.assert_allclose(to_numpy(grad), np.full((4096, 2), 1 / 64.0), rtol=1e-2)


def test_mixed_precision_trains_with_the_float32_penalty():
    keras.config.set_dtype_policy("mixed_float16")
    model = keras.Sequential([keras.Input((3,)), L.Dense(2, kernel_regularizer=L1L2Plus(group=0.5))])
    kernel = model.layers[0].kernel
    assert dtype_name(kernel.value) == "float32"
    expected = 0.5 * numpy_group_norms(to_numpy(kernel.value), "units").sum()
    assert float(to_numpy(model.losses[0])) == pytest.approx(expected, rel=1e-6)


def test_terms_keep_two_values_and_the_group_term_has_its_own():
    w = kernel_with_a_dead_unit()
    reg = L1L2Plus(l1=0.1, l2=0.2, group=0.3)
    l1_term, l2_term = reg.terms(w)
    assert float(to_numpy(l1_term)) == pytest.approx(0.1 * np.abs(w).sum(), rel=1e-6)
    assert float(to_numpy(l2_term)) == pytest.approx(0.2 * np.square(w.astype("float64")).sum(), rel=1e-6)
    assert float(to_numpy(reg.group_term(w))) == pytest.approx(0.3 * numpy_group_norms(w, "units").sum(), rel=1e-6)
    assert float(to_numpy(reg(w))) == pytest.approx(
        float(to_numpy(l1_term)) + float(to_numpy(l2_term)) + float(to_numpy(reg.group_term(w))), rel=1e-6
    )


def test_config_round_trips_and_a_regularizer_without_group_keeps_its_old_config():
    reg = L1L2Plus(l1=0.1, group=0.25, groups="inputs", proximal=True)
    config = reg.get_config()
    assert config == {"l1": 0.1, "l2": 0.0, "zero_grad": 0.0, "proximal": True, "group": 0.25, "groups": "inputs"}
    assert L1L2Plus.from_config(config) == reg
    restored = keras.regularizers.deserialize(keras.regularizers.serialize(reg))
    assert restored == reg and restored.groups == "inputs"
    assert L1L2Plus(l1=0.1).get_config() == {"l1": 0.1, "l2": 0.0, "zero_grad": 0.0, "proximal": False}
    assert "group=0.25, groups='inputs'" in repr(reg)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"group": -0.1}, "group"),
        ({"group": float("nan")}, "group"),
        ({"group": "0.1"}, "group"),
        ({"groups": "rows"}, "groups"),
        ({"groups": 1}, "groups"),
    ],
)
def test_bad_arguments_are_named(kwargs, argument):
    with pytest.raises(ValueError, match=f"argument `{argument}`.*Received: {argument}="):
        L1L2Plus(**kwargs)


def test_input_groups_need_a_kernel():
    with pytest.raises(ValueError, match="argument `groups`.*shape \\(3,\\).*Received: groups='inputs'"):
        L1L2Plus(group=0.1, groups="inputs")(np.ones(3, "float32"))
    assert group_axes((3, 3, 2, 4), "inputs") == (0, 1, 3) and group_axes((3, 3, 2, 4), "units") == (0, 1, 2)


# --- penalty_terms, regularize, the logger, the schedule ------------------------------------


def mlp(inputs=5, hidden=4, outputs=2):
    return keras.Sequential(
        [keras.Input((inputs,)), L.Dropout(0.1), L.Dense(hidden, name="hidden"), L.Dense(outputs, name="out")]
    )


def test_penalty_terms_has_the_group_key_only_with_a_group_term():
    model = mlp()
    kl.regularize(model, l1_weight=0.01)
    assert "group_weight" not in kl.penalty_terms(model)
    kl.regularize(model, l1_weight=0.01, group_weight=0.2)
    terms = {k: float(to_numpy(v)) for k, v in kl.penalty_terms(model, per_layer=True).items()}
    hidden, out = (to_numpy(layer.kernel) for layer in model.layers[1:])
    assert terms["group_weight/hidden"] == pytest.approx(0.2 * numpy_group_norms(hidden, "units").sum(), rel=1e-6)
    assert terms["group_weight"] == pytest.approx(
        0.2 * (numpy_group_norms(hidden, "units").sum() + numpy_group_norms(out, "units").sum()), rel=1e-6
    )
    parts = ("l1_weight", "l1_bias", "l2_weight", "l2_bias", "group_weight")
    assert terms["penalty"] == pytest.approx(sum(terms[k] for k in parts), rel=1e-6)
    assert terms["penalty"] == pytest.approx(sum(float(to_numpy(v)) for v in model.losses), rel=1e-6)


@pytest.mark.parametrize(
    "groups, expected",
    [("units", ("units", "units")), ("inputs", ("inputs", None)), ("both", ("inputs", "inputs"))],
)
def test_regularize_groups(groups, expected):
    model = mlp()
    kl.regularize(model, l2_bias=0.1, group_weight=0.2, groups=groups)
    found = []
    for layer in model.layers[1:]:
        reg = layer.kernel_regularizer
        found.append(None if reg is None else reg.groups)
        assert layer.bias_regularizer.group == 0.0  # biases take no group term
    assert tuple(found) == expected


def test_regularize_inputs_needs_known_inputs():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = L.Dense(2)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(ValueError, match='groups="both".*"units"'):
        kl.regularize(Net(), group_weight=0.1, groups="inputs")
    for fix in ("both", "units"):  # the suggested fixes run
        net = kl.regularize(Net(), group_weight=0.1, groups=fix)
        assert net.dense.kernel_regularizer.groups == ("inputs" if fix == "both" else "units")
    with pytest.raises(ValueError, match="argument `groups`.*Received: groups='rows'"):
        kl.regularize(mlp(), group_weight=0.1, groups="rows")


def test_logger_logs_the_group_term_and_the_live_groups():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 5)).astype("float32"), rng.normal(size=(64, 2)).astype("float32")
    model = mlp()
    # Rows and columns of decreasing size: the small ones go first, within the 6 steps, on every backend.
    model.layers[1].kernel.assign(rng.normal(size=(5, 4)) * np.linspace(0.05, 1.0, 5)[:, None])
    model.layers[2].kernel.assign(rng.normal(size=(4, 2)) * np.linspace(0.05, 1.0, 4)[:, None])
    kl.regularize(model, group_weight=1.0, groups="both", proximal_weight=True)
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.SGD(0.1)), loss="mse")

    def live(model):
        hidden, out = (to_numpy(layer.kernel) for layer in model.layers[1:])
        return int((numpy_group_norms(hidden, "inputs") > 0).sum() + (numpy_group_norms(out, "inputs") > 0).sum())

    counts = [live(model)]  # at the weights each epoch's one step starts from
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: counts.append(live(model)))
    history = model.fit(x, y, batch_size=64, epochs=6, verbose=0, callbacks=[kl.PenaltyLogger(), record]).history
    for loss, data, penalty in zip(history["loss"], history["data_loss"], history["penalty"]):
        assert loss == pytest.approx(data + penalty, rel=1e-5)
    np.testing.assert_allclose(history["penalty"], history["group_weight"], rtol=1e-6)
    assert counts[0] == 5 + 4 and counts[-1] < counts[0]  # 5 input features, 4 hidden units (rows of `out`)
    assert history["live_groups"] == counts[:-1]  # each step's count, at the weights its loss used


def test_schedule_sets_the_group_lambda():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 5)).astype("float32"), rng.normal(size=(32, 2)).astype("float32")
    model = mlp()
    kl.regularize(model, group_weight=0.1)
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(
        x,
        y,
        batch_size=32,
        epochs=3,
        verbose=0,
        callbacks=[kl.PenaltyLogger(), kl.PenaltySchedule(group_weight=lambda epoch: 0.5 * (epoch + 1))],
    ).history
    assert history["lambda_group_weight"] == [0.5, 1.0, 1.5]
    assert model.layers[1].kernel_regularizer.get_config()["group"] == 1.5
    # The epoch's term is λ(epoch)·Σ‖w_g‖ with one step per epoch: at the weights before the last step.
    assert history["group_weight"][-1] > 0


def test_schedule_of_a_group_term_nobody_has_says_how_to_put_one_on():
    model = mlp()
    kl.regularize(model, l1_weight=0.1)
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match=r"regularize\(model, group_weight="):
        model.fit(np.ones((4, 5)), np.ones((4, 2)), verbose=0, callbacks=[kl.PenaltySchedule(group_weight=0.1)])
    kl.regularize(model, group_weight=0.1)  # the fix
    model.fit(np.ones((4, 5)), np.ones((4, 2)), verbose=0, callbacks=[kl.PenaltySchedule(group_weight=0.2)])


def test_tensorboard_layout_has_the_group_charts(tmp_path):
    pytest.importorskip("tensorboard")
    from keras_l1l2plus.tensorboard_layout import tensorboard_layout

    titles = [c.title for c in tensorboard_layout(groups=True, sparsity=True).category[0].chart]
    assert any(t.startswith("group_weight") for t in titles) and any(t.startswith("live_groups") for t in titles)
    assert not any(t.startswith("group") for t in (c.title for c in tensorboard_layout().category[0].chart))


# --- the proximal group step ---------------------------------------------------------


def numpy_block_soft_threshold(w, groups, threshold, p=1.0):
    """w_g·max(0, 1 − threshold/‖(w/p)_g‖) (float64)."""
    w = np.asarray(w, "float64")
    norms = numpy_group_norms(w / p, groups)
    scale = np.where(norms > threshold, 1 - threshold / np.where(norms > 0, norms, 1), 0.0)
    return w * (scale if groups == "units" else scale[:, None])


def one_group_step(optimizer, l1=0.0, group=0.4, groups="units", seed=0):
    """One proximal step from fixed weights; the data gradient is known."""
    rng = np.random.default_rng(seed)
    kernel = rng.normal(size=(4, 3)).astype("float32") * 0.3
    x = rng.normal(size=(8, 4)).astype("float32")
    y = rng.normal(size=(8, 3)).astype("float32")
    reg = L1L2Plus(l1=l1, group=group, groups=groups, proximal=True)
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, use_bias=False, kernel_regularizer=reg)])
    model.layers[0].kernel.assign(kernel)
    model.compile(optimizer=kl.ProximalOptimizer(optimizer), loss="mse")
    grad = 2 * x.T.astype("float64") @ (x @ kernel - y) / y.size
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    return kernel.astype("float64"), grad, to_numpy(model.layers[0].kernel)


@pytest.mark.parametrize("groups", ["units", "inputs"])
def test_sgd_group_step_is_block_soft_thresholding(groups):
    lr, group = 0.5, 0.6
    w, g, new = one_group_step(keras.optimizers.SGD(lr), group=group, groups=groups)
    expected = numpy_block_soft_threshold(w - lr * g, groups, lr * group)
    assert 0 < (numpy_group_norms(expected, groups) == 0).sum()  # some group goes, exactly
    np.testing.assert_allclose(new, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(numpy_group_norms(new, groups) == 0, numpy_group_norms(expected, groups) == 0)


def test_sparse_group_step_is_soft_then_block_soft_thresholding():
    lr, l1, group = 0.5, 0.1, 0.2
    w, g, new = one_group_step(keras.optimizers.SGD(lr), l1=l1, group=group)
    stepped = w - lr * g
    soft = np.sign(stepped) * np.maximum(np.abs(stepped) - lr * l1, 0)
    np.testing.assert_allclose(new, numpy_block_soft_threshold(soft, "units", lr * group), rtol=1e-5, atol=1e-7)
    assert (new == 0).sum() > 0


def test_adam_group_step_uses_the_groups_preconditioned_step():
    lr, group = 0.01, 0.5
    w, g, new = one_group_step(keras.optimizers.Adam(lr), group=group)
    # Adam's first step: m̂ = g, v̂ = g², so the update is lr·g/(|g| + ε̂) and p = √(1−β2)/(√v + ε).
    v = (1 - 0.999) * g**2
    p = np.sqrt(1 - 0.999) / (np.sqrt(v) + 1e-7)
    m = (1 - 0.9) * g
    stepped = w - lr * np.sqrt(1 - 0.999) / (1 - 0.9) * m / (np.sqrt(v) + 1e-7)  # Keras's form of the same update
    expected = numpy_block_soft_threshold(stepped, "units", lr * group, p)
    np.testing.assert_allclose(new, expected, rtol=1e-4, atol=1e-7)


def exact_preconditioned_prox(w, eta, lam):
    """argmin_z Σ (z − w)²/(2η) + λ‖z‖₂ for one group, by bisection on r = ‖z‖ (float64)."""
    if np.linalg.norm(w / eta) <= lam:
        return np.zeros_like(w)
    lo, hi = 0.0, np.linalg.norm(w)
    for _ in range(200):  # z_i(r) = w_i·r/(r + η_i·λ); find r = ‖z(r)‖
        r = (lo + hi) / 2
        if np.linalg.norm(w * r / (r + eta * lam)) > r:
            lo = r
        else:
            hi = r
    return w * r / (r + eta * lam)


def test_the_adaptive_group_step_zeroes_exactly_the_groups_the_exact_step_zeroes():
    rng = np.random.default_rng(0)
    w = (rng.normal(size=(6, 200)) * rng.uniform(0.1, 1.0, size=200)).astype("float32")  # 200 groups of 6
    p = rng.uniform(0.2, 5.0, size=(6, 200)).astype("float32")  # per-coordinate step sizes, lr = 1
    lam = 0.8
    # float32 (JAX's default): groups within 1e-4 of the threshold could round either way, and are not judged.
    clear = np.abs(np.linalg.norm(w.astype("float64") / p, axis=0) / lam - 1) > 1e-4
    ours = to_numpy(keras.ops.convert_to_tensor(w) * group_scale(w, "units", lam, keras.ops.convert_to_tensor(p)))
    exact = np.stack([exact_preconditioned_prox(w[:, j].astype("float64"), p[:, j], lam) for j in range(200)], 1)
    zero_ours, zero_exact = np.all(ours == 0, axis=0), np.all(exact == 0, axis=0)
    assert 20 < zero_exact[clear].sum() < 180  # a mix of zeroed and kept groups
    np.testing.assert_array_equal(zero_ours[clear], zero_exact[clear])
    # With equal step sizes in a group, it is the exact step.
    p_equal = np.ascontiguousarray(np.broadcast_to(rng.uniform(0.2, 5.0, size=200), (6, 200))).astype("float32")
    equal = to_numpy(keras.ops.convert_to_tensor(w) * group_scale(w, "units", lam, keras.ops.convert_to_tensor(p_equal)))
    exact = np.stack([exact_preconditioned_prox(w[:, j].astype("float64"), p_equal[:, j], lam) for j in range(200)], 1)
    np.testing.assert_allclose(equal, exact, rtol=1e-5, atol=1e-6)


def test_a_zero_learning_rate_leaves_the_weights_alone():
    w, _, new = one_group_step(keras.optimizers.Adam(0.0), group=5.0)
    np.testing.assert_array_equal(new, w.astype("float32"))


def test_gradient_accumulation_takes_the_group_step_once_per_real_update():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)).astype("float32"), rng.normal(size=(16, 3)).astype("float32")
    lr, group, steps = 0.1, 0.3, 2
    reg = L1L2Plus(group=group, proximal=True)
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, use_bias=False, kernel_initializer="ones",
                                                          kernel_regularizer=reg)])
    sgd = keras.optimizers.SGD(lr, gradient_accumulation_steps=steps)
    model.compile(optimizer=kl.ProximalOptimizer(sgd), loss="mse")
    model.fit(x, y, batch_size=2, epochs=1, verbose=0, shuffle=False)
    w = np.ones((4, 3))
    x64, y64 = x.astype("float64"), y.astype("float64")
    for start in range(0, 16, 2 * steps):
        grads = [2 * xb.T @ (xb @ w - yb) / yb.size
                 for xb, yb in ((x64[i:i + 2], y64[i:i + 2]) for i in range(start, start + 2 * steps, 2))]
        w = numpy_block_soft_threshold(w - lr * np.mean(grads, axis=0), "units", lr * group)
    np.testing.assert_allclose(to_numpy(model.layers[0].kernel), w, rtol=1e-5, atol=1e-6)


def test_ema_keeps_the_zero_groups():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype("float32"), rng.normal(size=(32, 3)).astype("float32") * 0.1
    reg = L1L2Plus(group=0.5, groups="inputs", proximal=True)
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, use_bias=False, kernel_regularizer=reg)])
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.9)),
                  loss="mse")
    model.fit(x, y, batch_size=32, epochs=30, verbose=0)  # fit ends by swapping the average in
    kernel = to_numpy(model.layers[0].kernel)
    dead = np.all(kernel == 0, axis=1)
    assert dead.sum() >= 1
    assert np.all(kernel[~dead] != 0)


# --- the oracle: scikit-learn's MultiTaskLasso --------------------------------------------


def multitask_problem(n=200, p=8, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p))
    x = (x - x.mean(0)) / x.std(0)
    true_w = np.zeros((p, k))
    true_w[:4] = rng.normal(size=(4, k)) * np.array([[2.0], [1.0], [0.5], [0.15]])
    y = x @ true_w + 0.5 * rng.normal(size=(n, k))
    y -= y.mean(0)
    return x.astype("float32"), y.astype("float32")


def multitask_objective(w, x, y, alpha):
    """(1/(2n))·‖Y − XW‖²_F + α·Σ_i ‖W_i‖₂ (float64): scikit-learn's MultiTaskLasso."""
    r = y.astype("float64") - x.astype("float64") @ w
    return 0.5 * np.square(r).sum() / len(x) + alpha * np.linalg.norm(w, axis=1).sum()


def half_squared_error(y_true, y_pred):
    """½·Σ_k (y − ŷ)² per example: Keras's mean over the batch gives (1/(2n))·‖Y − XW‖²_F."""
    return 0.5 * keras.ops.sum(keras.ops.square(keras.ops.subtract(y_true, y_pred)), axis=-1)


def feature_selection_model(p, k):
    model = keras.Sequential([keras.Input((p,)), L.Dense(k, use_bias=False, kernel_initializer="zeros")])
    return model


@pytest.mark.parametrize("loop", ["fit", "custom"])
def test_proximal_sgd_reaches_multitask_lassos_solution(loop):
    from sklearn.linear_model import MultiTaskLasso

    x, y = multitask_problem()
    alpha = 0.15
    reference = MultiTaskLasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=1_000_000)
    ref_w = reference.fit(x.astype("float64"), y.astype("float64")).coef_.T  # (p, k): a row per feature
    ref_dead = np.all(ref_w == 0, axis=1)
    assert 0 < ref_dead.sum() < len(ref_dead)
    lr = 1.0 / np.linalg.eigvalsh(x.astype("float64").T @ x / len(x)).max()  # 1/L
    steps = 2000
    model = feature_selection_model(x.shape[1], y.shape[1])
    kl.regularize(model, group_weight=alpha, groups="inputs", proximal_weight=True)
    optimizer = kl.ProximalOptimizer(keras.optimizers.SGD(lr))
    if loop == "fit":
        model.compile(optimizer=optimizer, loss=half_squared_error, steps_per_execution=steps_per_execution(100))
        model.fit(np.tile(x, (steps, 1)), np.tile(y, (steps, 1)), batch_size=len(x), epochs=1, verbose=0,
                  shuffle=False)
    else:
        def loss():  # the group term is in the penalty's value, and the proximal step applies it
            return keras.ops.mean(half_squared_error(y, model(x))) + kl.penalty_terms(model)["penalty"]

        custom_loop(model, optimizer, loss, steps)
    w = to_numpy(model.layers[0].kernel)
    np.testing.assert_array_equal(np.all(w == 0, axis=1), ref_dead)
    ours, theirs = multitask_objective(w, x, y, alpha), multitask_objective(ref_w, x, y, alpha)
    assert ours == pytest.approx(theirs, rel=1e-4)


@pytest.mark.slow
def test_keras_file_in_a_fresh_process_keeps_the_group_term_and_step(tmp_path, fresh_python):
    x, y = multitask_problem(n=64)
    model = feature_selection_model(x.shape[1], y.shape[1])
    kl.regularize(model, l1_weight=0.01, group_weight=0.2, groups="inputs", proximal_weight=True)
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.Adam(0.05)), loss=half_squared_error)
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False)
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    model.fit(x, y, batch_size=16, epochs=5, verbose=0, shuffle=False)
    out = fresh_python(
        f"""
        import json, keras, numpy as np
        import keras_l1l2plus as kl

        def half_squared_error(y_true, y_pred):
            return 0.5 * keras.ops.sum(keras.ops.square(y_true - y_pred), axis=-1)

        model = keras.models.load_model({str(tmp_path / "m.keras")!r},
                                        custom_objects={{"half_squared_error": half_squared_error}})
        x, y = np.load({str(tmp_path / "x.npy")!r}), np.load({str(tmp_path / "y.npy")!r})
        model.fit(x, y, batch_size=16, epochs=5, verbose=0, shuffle=False)
        print(json.dumps({{"config": model.layers[0].kernel_regularizer.get_config(),
                          "kernel": model.layers[0].kernel.numpy().tolist()}}))
        """
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert result["config"] == {"l1": 0.01, "l2": 0.0, "zero_grad": 0.0, "proximal": True, "group": 0.2,
                                "groups": "inputs"}
    kernel = to_numpy(model.layers[0].kernel)
    assert np.all(kernel == 0, axis=1).sum() >= 1
    np.testing.assert_allclose(result["kernel"], kernel, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(np.array(result["kernel"]) == 0, kernel == 0)


# --- distribution: the group step on two devices equals one device -------------------------

DISTRIBUTED_RUN = """
import json
import keras, numpy as np
import keras_l1l2plus as kl

rng = np.random.default_rng(0)
x = rng.normal(size=(64, 5)).astype("float32")
y = rng.normal(size=(64, 2)).astype("float32")

def run(scope, optimizer):
    with scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh"),
                                  keras.layers.Dense(2)])
        kl.regularize(model, l1_weight=0.01, group_weight=0.2, groups="both", proximal_weight=True)
        model.compile(optimizer=kl.ProximalOptimizer(optimizer()), loss="mse")
    schedule = kl.PenaltySchedule(group_weight=keras.optimizers.schedules.PiecewiseConstantDecay(
        [6], [0.2, 0.4]))  # the proximal λg changes within the third epoch
    history = model.fit(x, y, batch_size=16, epochs=5, shuffle=False, verbose=0,
                        callbacks=[kl.PenaltyLogger(), schedule])
    return history.history, [w.tolist() for w in model.get_weights()]
"""


def assert_same_runs(result):
    for name, runs in result.items():
        (single, w1), (parallel, w2) = runs["single"], runs["parallel"]
        for key in ("loss", "penalty", "group_weight", "live_groups", "lambda_group_weight"):
            np.testing.assert_allclose(parallel[key], single[key], rtol=1e-5, atol=1e-7, err_msg=f"{name} {key}")
        assert single["lambda_group_weight"][-1] == pytest.approx(0.4)
        assert single["live_groups"][-1] < single["live_groups"][0], name  # the step removed groups
        for a, b in zip(w1, w2):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=name)
            np.testing.assert_array_equal(np.array(b) == 0, np.array(a) == 0)


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="keras.distribution.DataParallel (jax backend)")
def test_jax_data_parallel_group_step_matches_single_device(fresh_python):
    out = fresh_python(
        dedent("""
        import os, contextlib
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        import jax
        """)
        + DISTRIBUTED_RUN
        + dedent("""
        assert len(jax.devices()) == 2
        result = {}
        for name, opt in (("sgd", lambda: keras.optimizers.SGD(0.1)), ("adam", lambda: keras.optimizers.Adam(0.05))):
            keras.distribution.set_distribution(None)
            single = run(contextlib.nullcontext, opt)
            keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
            result[name] = {"single": single, "parallel": run(contextlib.nullcontext, opt)}
        print(json.dumps(result))
        """)
    )
    assert_same_runs(json.loads(out.strip().splitlines()[-1]))


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute.MirroredStrategy")
def test_mirrored_strategy_group_step_matches_single_device(fresh_python):
    out = fresh_python(
        dedent("""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        """)
        + DISTRIBUTED_RUN
        + dedent("""
        mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        result = {}
        for name, opt in (("sgd", lambda: keras.optimizers.SGD(0.1)), ("adam", lambda: keras.optimizers.Adam(0.05))):
            result[name] = {"single": run(tf.distribute.get_strategy().scope, opt),
                            "parallel": run(mirrored.scope, opt)}
        print(json.dumps(result))
        """)
    )
    assert_same_runs(json.loads(out.strip().splitlines()[-1]))


def test_input_groups_reach_the_first_kernel_through_per_feature_layers_and_refuse_otherwise():
    inputs = keras.Input((8,))
    h = L.BatchNormalization()(L.Normalization()(inputs))
    model = keras.Model(inputs, L.Dense(1, name="out")(L.Dense(4, name="first")(h)))
    kl.regularize(model, group_weight=0.1, groups="inputs")
    assert model.get_layer("first").kernel_regularizer.groups == "inputs"
    assert model.get_layer("out").kernel_regularizer is None
    flat = keras.Sequential([keras.Input((4, 4)), L.Flatten(name="flatten"), L.Dense(1)])
    with pytest.raises(ValueError, match="argument `groups`.*flatten \\(Flatten\\).*groups=\"both\""):
        kl.regularize(flat, group_weight=0.1, groups="inputs")
    kl.regularize(flat, group_weight=0.1, groups="both")  # the fix the message gives


def test_variables_and_their_saved_attributes_agree_and_transposed_kernels_swap_axes(tmp_path):
    model = keras.Sequential([keras.Input((8, 8, 3)), L.DepthwiseConv2D(3, name="depthwise"),
                              L.Conv2DTranspose(4, 3, name="transposed"), L.Flatten(), L.Dense(2, name="dense")])
    kl.regularize(model, group_weight=0.1, groups="both")
    depthwise, transposed = model.get_layer("depthwise"), model.get_layer("transposed")
    assert depthwise.kernel.regularizer.groups == depthwise.depthwise_regularizer.groups == "units"
    # Conv2DTranspose's kernel is (taps, taps, filters, inputs): its rows (inputs) are the last axis.
    assert transposed.kernel.regularizer.groups == transposed.kernel_regularizer.groups == "units"
    before = float(to_numpy(kl.penalty_terms(model)["group_weight"]))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert float(to_numpy(kl.penalty_terms(loaded)["group_weight"])) == pytest.approx(before, rel=1e-6)


def test_equal_regularizers_hash_equally():
    a, b = L1L2Plus(l1=0.1, groups="inputs"), L1L2Plus(l1=0.1)  # no group term: `groups` is not in the config
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    c = L1L2Plus(l1=0.1, group=0.2, groups="inputs")
    assert c != L1L2Plus(l1=0.1, group=0.2) and c == L1L2Plus.from_config(c.get_config())
