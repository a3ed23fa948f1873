"""The regularization path against scikit-learn's lasso_path, enet_path and LassoCV, and its bookkeeping."""

import csv

import keras
import numpy as np
import pytest
from backends import only_on, slow_on, steps_per_execution

import keras_l1l2plus as kl
from keras_l1l2plus.path import from_sklearn, lambda_max, regularization_path, to_sklearn

L = keras.layers
# 900-1200 full-batch steps through `fit`: seconds on every backend, but TensorFlow's per-epoch cost makes the
# cross-validated path (720 one-step epochs) take half a minute there.
CV_SLOW = slow_on("tensorflow")


def regression(n=120, p=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p))
    x = (x - x.mean(0)) / x.std(0)
    w = np.array([2.0, -1.5, 0.0, 0.0, 1.0, 0.0, 0.3, 0.0])[:p]
    y = x @ w + 0.5 * rng.normal(size=n)
    return x.astype("float32"), (y - y.mean()).astype("float32")[:, None]


def half_squared_error(y_true, y_pred):
    """½·(y − ŷ)² per example: Keras's batch mean is scikit-learn's (1/(2n))·‖y − Xw‖²."""
    return 0.5 * keras.ops.sum(keras.ops.square(keras.ops.subtract(y_true, y_pred)), axis=-1)


def linear(x, lr, **lambdas):
    model = keras.Sequential([keras.Input((x.shape[1],)), L.Dense(1, use_bias=False, kernel_initializer="zeros")])
    kl.regularize(model, proximal_weight=True, **lambdas)
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.SGD(lr)), loss=half_squared_error,
                  steps_per_execution=steps_per_execution(50))
    return model


def lipschitz(x):
    return 1.0 / np.linalg.eigvalsh(x.astype("float64").T @ x / len(x)).max()


REPEAT = 150  # full-batch steps per λ: the data repeated, one epoch of one batch per copy


def run_path(model, x, y, **kwargs):
    return regularization_path(model, np.tile(x, (REPEAT, 1)), np.tile(y, (REPEAT, 1)), batch_size=len(x),
                               epochs=1, shuffle=False, verbose=0, **kwargs)


def test_lambda_max_is_the_lassos():
    x, y = regression()
    model = linear(x, 0.1, l1_weight=1.0)
    expected = np.abs(x.astype("float64").T @ y[:, 0]).max() / len(x)  # ‖Xᵀy‖∞/n
    assert lambda_max(model, x, y, batch_size=32) == pytest.approx(expected, rel=1e-5)
    assert np.all(keras.ops.convert_to_numpy(model.layers[0].kernel) == 0)  # zero as before: restored


def test_lambda_max_counts_an_anchor_term():
    """With λa·‖w − w₀‖², the smooth part's gradient at 0 is −Xᵀy/n − 2·λa·w₀: λ_max is its ∞-norm."""
    x, y = regression()
    w0 = np.linspace(-1, 1, x.shape[1]).astype("float32")[:, None]
    model = linear(x, 0.1, l1_weight=1.0, l2_anchor_weight=0.1, anchor={"dense/kernel": w0})
    expected = np.abs(x.astype("float64").T @ y[:, 0] / len(x) + 2 * 0.1 * w0[:, 0]).max()
    assert lambda_max(model, x, y, batch_size=32) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="anchor terms \\['l2_anchor_weight'\\] move"):
        lambda_max(model, x, y, terms={"l1_weight": 1.0, "l2_anchor_weight": 1.0})
    model.layers[0].kernel_regularizer.l1 = 1.01 * expected  # just above λ_max: 0 stays exactly 0
    model.compile(optimizer=kl.ProximalOptimizer(keras.optimizers.SGD(lipschitz(x))), loss=half_squared_error)
    model.fit(x, y, batch_size=len(x), epochs=30, verbose=0)
    assert np.all(keras.ops.convert_to_numpy(model.layers[0].kernel) == 0)


def test_the_path_is_scikit_learns_lasso_path():
    from sklearn.linear_model import lasso_path

    x, y = regression()
    model = linear(x, lipschitz(x), l1_weight=1.0)
    path = run_path(model, x, y, n_lambdas=8, eps=0.01)
    alphas, coefs, _ = lasso_path(x.astype("float64"), y[:, 0].astype("float64"), alphas=path.lambdas, tol=1e-12,
                                  max_iter=100_000)
    np.testing.assert_allclose(alphas, path.lambdas)
    assert path.lambdas[0] == pytest.approx(np.abs(x.astype("float64").T @ y[:, 0]).max() / len(x), rel=2e-5)
    ours = np.stack([w[0][:, 0] for w in (path.weights_at(lam) for lam in path.lambdas)], axis=1)
    assert 2 < len({int((c == 0).sum()) for c in coefs.T})  # zero sets that change along the path
    np.testing.assert_array_equal(ours == 0, coefs == 0)
    np.testing.assert_allclose(ours, coefs, atol=1e-3 * np.abs(coefs).max())
    np.testing.assert_allclose(path.values("zeros_weight"), (coefs == 0).mean(axis=0))


def test_an_l1_l2_mix_is_scikit_learns_enet_path():
    from sklearn.linear_model import enet_path

    x, y = regression()
    rho = 0.6
    mix = from_sklearn(1.0, rho)  # λ1 = α·ρ, λ2 = α·(1 − ρ)/2 under the half squared error
    model = linear(x, 0.5 * lipschitz(x), l1_weight=mix["l1"], l2_weight=mix["l2"])
    path = run_path(model, x, y, n_lambdas=6, eps=0.02)
    assert path.terms == pytest.approx({"l1_weight": 1.0, "l2_weight": (1 - rho) / (2 * rho)})
    alphas = [lam / rho for lam in path.lambdas]  # the path's λ is λ1
    assert alphas[0] == pytest.approx(np.abs(x.astype("float64").T @ y[:, 0]).max() / (len(x) * rho), rel=2e-5)
    _, coefs, _ = enet_path(x.astype("float64"), y[:, 0].astype("float64"), l1_ratio=rho, alphas=alphas,
                            tol=1e-12, max_iter=100_000)
    ours = np.stack([path.weights_at(lam)[0][:, 0] for lam in path.lambdas], axis=1)
    np.testing.assert_array_equal(ours == 0, coefs == 0)
    np.testing.assert_allclose(ours, coefs, atol=1e-3 * np.abs(coefs).max())
    for lam, record in zip(path.lambdas, path.records):
        assert to_sklearn(record["lambda_l1_weight"], record["lambda_l2_weight"]) == pytest.approx((lam / rho, rho))


def test_sklearn_parameters_both_ways():
    assert from_sklearn(0.5, 0.2) == pytest.approx({"l1": 0.1, "l2": 0.2})
    assert from_sklearn(0.5, 0.2, loss_scale=2) == pytest.approx({"l1": 0.2, "l2": 0.4})  # Keras's "mse"
    assert to_sklearn(0.1, 0.2) == pytest.approx((0.5, 0.2))
    assert to_sklearn(**from_sklearn(0.3, 0.7, loss_scale=2), loss_scale=2) == pytest.approx((0.3, 0.7))
    with pytest.raises(ValueError, match="argument `l1_ratio`.*Received: l1_ratio=1.5"):
        from_sklearn(0.1, 1.5)


@CV_SLOW
def test_cross_validation_chooses_lassocvs_lambda():
    from sklearn.linear_model import LassoCV
    from sklearn.model_selection import KFold

    x, y = regression(n=100, seed=3)
    model = linear(x, lipschitz(x), l1_weight=1.0)
    grid = list(np.geomspace(0.5, 0.005, 6))
    folds = 3
    epochs = 30  # full-batch ISTA steps per λ: the validation losses rank the λs long before that
    path = regularization_path(model, x, y, lambdas=grid, cv=folds, batch_size=len(x), epochs=epochs,
                               validation_freq=epochs, shuffle=False, verbose=0)
    reference = LassoCV(alphas=grid, cv=KFold(folds), fit_intercept=False, tol=1e-12, max_iter=100_000)
    reference.fit(x.astype("float64"), y[:, 0].astype("float64"))
    theirs = list(reference.alphas_).index(reference.alpha_)
    ours = grid.index(path.lambdas[path.index(rule="min")])
    # LassoCV's MSE per fold is twice our half squared error: the same λ minimises both.
    mse = reference.mse_path_[[list(reference.alphas_).index(g) for g in grid]].mean(axis=1)
    np.testing.assert_allclose(np.asarray(path.cv["mean"]) * 2, mse, rtol=1e-3)
    assert ours == theirs
    assert path.index(rule="1se") <= ours  # the 1-SE λ is at least as large: earlier on a decreasing grid


@only_on("tensorflow", "jax", reason="PyTorch runs eagerly: no trace to count")
def test_the_whole_path_traces_as_one_fit():
    class Traces(L.Layer):
        count = 0

        def call(self, x):
            Traces.count += 1
            return x

    def model_():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), Traces(), L.Dense(1)])
        kl.regularize(model, l1_weight=0.1, group_weight=0.05, proximal_weight=True)
        model.compile(optimizer=kl.ProximalOptimizer("sgd"), loss="mse")
        return model

    x, y = np.ones((8, 4), "float32"), np.ones((8, 1), "float32")
    model = model_()
    Traces.count = 0
    model.fit(x, y, epochs=2, verbose=0, callbacks=[kl.PenaltyLogger(), kl.PenaltySchedule(l1_weight=0.2)])
    one_fit = Traces.count
    model = model_()
    Traces.count = 0
    regularization_path(model, x, y, lambdas=[0.3, 0.2, 0.1, 0.05], epochs=2, verbose=0)
    assert Traces.count == one_fit


def test_records_weights_best_and_model_at():
    x, y = regression(n=64)
    model = linear(x, 0.1, l1_weight=1.0)
    path = regularization_path(model, x, y, lambdas=[0.5, 0.1, 0.01], epochs=3, batch_size=16,
                               validation_data=(x[:16], y[:16]), verbose=0)
    assert path.monitor == "val_data_loss" and path.lambdas == [0.5, 0.1, 0.01]
    for record, lam in zip(path.records, path.lambdas):
        assert record["lambda_l1_weight"] == lam and record["epochs"] == 3 and record["seconds"] > 0
        assert record["loss"] == pytest.approx(record["data_loss"] + record["penalty"], rel=1e-5)
    chosen = path.index(rule="min")
    assert chosen == int(np.argmin(path.values("val_data_loss")))
    best = path.best()
    for got, kept in zip(best.get_weights(), path.weights_at(path.lambdas[chosen])):
        np.testing.assert_array_equal(got, kept)
    assert best.layers[0].kernel_regularizer.l1 == pytest.approx(path.lambdas[chosen])
    assert best.optimizer is not None  # compiled as the path's model
    at = path.model_at(0.09)  # the nearest λ on the path: 0.1
    np.testing.assert_array_equal(at.get_weights()[0], path.weights_at(0.1)[0])
    with pytest.raises(ValueError, match="cv=5"):
        path.best("1se")  # no standard error without cross-validation
    with pytest.raises(ValueError, match="argument `rule`.*Received: rule='max'"):
        path.best("max")


def test_weights_in_a_folder_csv_and_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    x, y = regression(n=32)
    model = linear(x, 0.1, l1_weight=1.0)
    path = regularization_path(model, x, y, lambdas=[0.3, 0.03], epochs=2, keep_weights=tmp_path / "w",
                               log_dir=tmp_path / "tb", verbose=0)
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["lambda_000.weights.h5", "lambda_001.weights.h5"]
    np.testing.assert_array_equal(path.weights_at(0.03)[0], model.get_weights()[0])  # the last λ's: the model's
    rows = list(csv.DictReader(path.to_csv(tmp_path / "path.csv").open()))
    assert [float(r["lambda"]) for r in rows] == [0.3, 0.03]
    assert float(rows[1]["data_loss"]) == pytest.approx(path.records[1]["data_loss"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    values = [e.value for e in events.Scalars("path/lambda")]
    np.testing.assert_allclose(values, [0.3, 0.03], rtol=1e-6)


def test_plot_draws_the_path():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    x, y = regression(n=60)
    model = linear(x, 0.1, l1_weight=1.0)
    path = regularization_path(model, x, y, lambdas=[0.3, 0.1, 0.03], epochs=2, cv=3, verbose=0)
    figure = path.plot()
    top = figure.axes[0]
    assert top.get_xscale() == "log" and len(figure.axes) == 3  # the values, the zeros (twin), the coefficients
    np.testing.assert_allclose(top.lines[0].get_xdata(), path.lambdas)


def test_an_interrupted_path_keeps_the_lambdas_done():
    x, y = regression(n=32)
    model = linear(x, 0.1, l1_weight=1.0)

    class Stop(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:  # one epoch per λ: the third λ's
                raise RuntimeError("stopped at the third λ")

    with pytest.raises(RuntimeError, match="third") as caught:
        regularization_path(model, x, y, lambdas=[0.3, 0.1, 0.03, 0.01], epochs=1, callbacks=[Stop()], verbose=0)
    done = caught.value.regularization_path
    assert done.lambdas == [0.3, 0.1] and len(done.records) == 2
    # The model is as after any interrupted fit; it trains on, and its λ is the one being set.
    model.fit(x, y, epochs=1, verbose=0)


def test_an_increasing_path_walks_the_grid_up():
    x, y = regression(n=32)
    model = linear(x, 0.1, l1_weight=1.0)
    path = regularization_path(model, x, y, n_lambdas=3, eps=0.1, direction="increasing", epochs=1, verbose=0)
    assert path.lambdas == sorted(path.lambdas) and path.lambdas[-1] == pytest.approx(path.lambda_max, rel=2e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lambdas": "grid"}, "argument `lambdas`.*Received: lambdas='grid'"),
        ({"lambdas": [0.1, -1.0]}, "argument `lambdas`"),
        ({"lambdas": []}, "argument `lambdas`"),
        ({"n_lambdas": 0}, "argument `n_lambdas`.*Received: n_lambdas=0"),
        ({"eps": 1.5}, "argument `eps`.*Received: eps=1.5"),
        ({"direction": "up"}, "argument `direction`.*Received: direction='up'"),
        ({"epochs": 0}, "argument `epochs`"),
        ({"cv": 1}, "argument `cv`.*Received: cv=1"),
        ({"terms": "l3_weight"}, "argument `terms`.*l3_weight"),
        ({"terms": {"l1_weight": -1}}, r"argument `terms\['l1_weight'\]`"),
        ({"terms": "group_weight"}, r"regularize\(model, group_weight="),
        ({"terms": "l2_weight"}, "L2 never makes a weight exactly 0"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    x, y = regression(n=16)
    model = linear(x, 0.1, l1_weight=1.0, l2_weight=0.1)
    with pytest.raises((ValueError, TypeError), match=match):
        regularization_path(model, x, y, verbose=0, **kwargs)


def test_a_model_without_regularizers_says_how_to_add_them():
    x, y = regression(n=16)
    model = keras.Sequential([keras.Input((8,)), L.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match=r"regularize\(model, l1_weight="):
        regularization_path(model, x, y, verbose=0)
    kl.regularize(model, l1_weight=1e-3, proximal_weight=True)  # the fix, as the message gives it
    model.compile(optimizer=kl.ProximalOptimizer("sgd"), loss="mse")
    assert len(regularization_path(model, x, y, n_lambdas=2, epochs=1, verbose=0)) == 2


def test_backend_gradient_of_the_data_loss():
    """λ_max's gradient is each backend's own: checked through a group term's closed form."""
    x, y = regression(n=50, p=4)
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, use_bias=False)])
    kl.regularize(model, group_weight=1.0, groups="inputs", proximal_weight=True)
    model.compile(optimizer=kl.ProximalOptimizer("sgd"), loss=half_squared_error)
    y3 = np.tile(y, (1, 3)) * np.array([1.0, -2.0, 0.5], "float32")
    g = x.astype("float64").T @ y3 / len(x)  # −∂/∂W at W = 0
    assert lambda_max(model, x, y3) == pytest.approx(np.linalg.norm(g, axis=1).max(), rel=1e-5)


def test_patience_ends_a_stage_at_its_best_epoch():
    x, y = regression(n=64)
    validation = regression(n=64, seed=5)
    model = linear(x, 0.5 * lipschitz(x), l1_weight=1.0)
    seen = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(logs["val_data_loss"]))
    path = regularization_path(model, x, y, lambdas=[0.3, 0.05, 0.01], epochs=60, patience=2, batch_size=64,
                               validation_data=validation, callbacks=[record], verbose=0)
    assert sum(r["epochs"] for r in path.records) == len(seen)  # one fit, the stages one after the other
    start = 0
    for r in path.records:
        stage = seen[start:start + r["epochs"]]
        start += r["epochs"]
        assert r["val_data_loss"] == pytest.approx(min(stage), rel=1e-6)  # the stage's best, put back
    assert any(r["epochs"] < 60 for r in path.records)  # patience ended some stage early


def test_lambda_max_of_a_network_is_each_layer_alone():
    """Two regularized layers: all at 0 is a saddle (gradient 0); λ_max is the largest layer-alone bound."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 6)).astype("float32"), rng.normal(size=(64, 1)).astype("float32")
    model = keras.Sequential([keras.Input((6,)), L.Dense(8, activation="tanh"), L.Dense(1)])
    kl.regularize(model, l1_weight=0.1, proximal_weight=True)
    model.compile(optimizer=kl.ProximalOptimizer("sgd"), loss=half_squared_error)
    w1, b1, w2, b2 = (w.astype("float64") for w in model.get_weights())
    x64, y64 = x.astype("float64"), y.astype("float64")
    # W2 alone at 0: ŷ = b2, ∂/∂W2 = hᵀ(ŷ − y)/n with h = tanh(x W1 + b1).
    g2 = np.tanh(x64 @ w1 + b1).T @ (b2 - y64) / len(x)
    # W1 alone at 0: h = tanh(b1) everywhere, ∂/∂W1 = xᵀ[((ŷ − y) W2ᵀ)·(1 − tanh²(b1))]/n.
    y_hat = np.tanh(b1) @ w2 + b2
    g1 = x64.T @ (((y_hat - y64) @ w2.T) * (1 - np.tanh(b1) ** 2)) / len(x)
    expected = max(np.abs(g1).max(), np.abs(g2).max())
    assert expected > 0
    assert lambda_max(model, x, y) == pytest.approx(expected, rel=1e-4)


def test_a_dataset_with_auto_lambdas_is_refused_by_name():
    x, y = regression(n=16)
    model = linear(x, 0.1, l1_weight=1.0)

    def batches():
        while True:
            yield x, y

    with pytest.raises(TypeError, match="argument `x`.*lambdas=\\[...\\]"):
        regularization_path(model, batches(), verbose=0)
    with pytest.raises(TypeError, match="argument `y`"):
        regularization_path(model, x, None, verbose=0)
    with pytest.raises(ValueError, match="initial_epoch"):
        regularization_path(model, x, y, lambdas=[0.1], initial_epoch=2, verbose=0)


def test_a_path_without_a_lambda_or_rule_to_read_says_so():
    x, y = regression(n=16)
    path = regularization_path(linear(x, 0.1, l1_weight=1.0), x, y, lambdas=[0.3, 0.1], epochs=1, verbose=0)
    with pytest.raises(ValueError, match="Give a λ or a rule"):
        path.model_at()


def test_a_callback_that_stops_the_fit_leaves_a_shorter_path_with_a_warning():
    x, y = regression(n=16)
    model = linear(x, 0.1, l1_weight=1.0)
    stop = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: setattr(model, "stop_training", epoch == 1))
    with pytest.warns(UserWarning, match="after 2 of 4 λs"):
        path = regularization_path(model, x, y, lambdas=[0.3, 0.1, 0.03, 0.01], epochs=1, callbacks=[stop],
                                   verbose=0)
    assert path.lambdas == [0.3, 0.1]


def test_tol_ends_a_converged_stage():
    x, y = regression()
    model = linear(x, lipschitz(x), l1_weight=1.0)
    seen = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(logs["loss"]))
    path = regularization_path(model, x, y, lambdas=[0.5, 0.2, 0.1], epochs=500, tol=1e-6, batch_size=len(x),
                               callbacks=[record], verbose=0)
    start = 0
    for r in path.records:
        stage = seen[start:start + r["epochs"]]
        start += r["epochs"]
        assert r["epochs"] < 500
        assert stage[-2] - stage[-1] < 1e-6 * abs(stage[-2])  # ended at the first epoch that gained < tol
        assert all(a - b >= 1e-6 * abs(a) for a, b in zip(stage[:-2], stage[1:-1]))
