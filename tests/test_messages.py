"""Every error and warning that names a call to make: that call, as written, runs and does the job."""

import re
import warnings

import keras
import numpy as np
import pytest

import keras_l1l2plus as kl

L = keras.layers


def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(32, 3)).astype("float32"), rng.normal(size=(32, 1)).astype("float32")


def model(**regularize):
    keras.utils.set_random_seed(0)
    built = keras.Sequential([keras.Input((3,)), L.Dense(1)])
    return kl.regularize(built, **regularize) if regularize else built


def suggested(message, pattern):
    found = re.search(pattern, message)
    assert found, f"{pattern!r} not in: {message}"
    return found.group(0)


@pytest.mark.parametrize("keyword, term", [("l1", "l1_weight"), ("l2", "l2_weight"), ("l1", "l1_bias")])
def test_a_callable_lambda_of_l1l2plus_points_to_penalty_schedule_keywords_that_exist(keyword, term):
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    with pytest.raises(ValueError) as error:
        kl.L1L2Plus(**{keyword: schedule})
    call = suggested(str(error.value), rf"keras_l1l2plus\.PenaltySchedule\({keyword}_weight=\.\.\.\)")
    assert f"PenaltySchedule({keyword}_bias=...)" in str(error.value)
    x, y = data()
    net = model(**{term: 0.1})
    net.compile(optimizer="sgd", loss="mse")
    callback = eval(call.replace("keras_l1l2plus", "kl").replace(f"{keyword}_weight=...", f"{term}=schedule"))
    net.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    role = "kernel" if term.endswith("weight") else "bias"
    assert getattr(net.layers[0], f"{role}_regularizer").scheduled


def test_a_callable_lambda_of_regularize_points_to_penalty_schedule():
    schedule = lambda epoch: 0.1  # noqa: E731
    with pytest.raises(ValueError) as error:
        kl.regularize(model(), l2_weight=schedule)
    call = suggested(str(error.value), r"keras_l1l2plus\.PenaltySchedule\(l2_weight=\.\.\.\)")
    x, y = data()
    net = model(l2_weight=0.5)
    net.compile(optimizer="sgd", loss="mse")
    net.fit(x, y, epochs=1, verbose=0, callbacks=[eval(call.replace("keras_l1l2plus", "kl").replace("...", "schedule"))])
    assert net.layers[0].kernel_regularizer.get_config()["l2"] == 0.1


def test_a_schedule_without_regularizers_points_to_regularize():
    x, y = data()
    net = model()
    net.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError) as error:
        net.fit(x, y, epochs=1, verbose=0, callbacks=[kl.PenaltySchedule(l2_weight=0.1)])
    call = suggested(str(error.value), r"keras_l1l2plus\.regularize\(model, l2_weight=<the starting λ>\)")
    eval(call.replace("keras_l1l2plus", "kl").replace("model", "net").replace("<the starting λ>", "0.05"))
    net.fit(x, y, epochs=1, verbose=0, callbacks=[kl.PenaltySchedule(l2_weight=0.1)])
    assert net.layers[0].kernel_regularizer.get_config()["l2"] == 0.1


def test_a_wrapped_loss_scale_optimizer_points_to_the_order_that_runs():
    with pytest.raises(TypeError) as error:
        kl.ProximalOptimizer(keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam()))
    call = suggested(str(error.value), r"keras\.optimizers\.LossScaleOptimizer\(keras_l1l2plus\.ProximalOptimizer\("
                                       r"keras\.optimizers\.Adam\(\)\)\)")
    optimizer = eval(call.replace("keras_l1l2plus", "kl"))
    x, y = data()
    net = model(l1_weight=0.01, proximal_weight=True)
    net.compile(optimizer=optimizer, loss="mse")
    net.fit(x, y, epochs=1, verbose=0)


def test_a_proximal_model_without_a_proximal_optimizer_points_to_one():
    x, y = data()
    net = model(l1_weight=0.5, proximal_weight=True)
    net.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    with pytest.warns(UserWarning) as caught:
        net.fit(x, y, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger()])
    message = " ".join(str(w.message) for w in caught)
    call = suggested(message, r"optimizer=keras_l1l2plus\.ProximalOptimizer\(<your optimizer>\)")
    net.compile(**eval(f"dict({call})".replace("keras_l1l2plus", "kl").replace("<your optimizer>",
                                                                              "keras.optimizers.SGD(0.1)")), loss="mse")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        history = net.fit(x, y, epochs=5, verbose=0, callbacks=[kl.PenaltyLogger()]).history
    assert "sparsity_weight" in history  # logged: the optimizer takes the proximal step now
    assert (net.layers[0].kernel.numpy() == 0).any()  # and it made exact zeros


def test_the_removed_callback_points_to_the_optimizer_that_replaced_it():
    with pytest.raises(TypeError) as error:
        kl.ProximalL1()
    call = suggested(str(error.value), r"optimizer=keras_l1l2plus\.ProximalOptimizer\(<your\s+optimizer>\)")
    assert isinstance(eval(re.sub(r"<your\s+optimizer>", '"sgd"', call.split("=", 1)[1]).replace("keras_l1l2plus", "kl")),
                      kl.ProximalOptimizer)


def test_a_model_without_regularizers_points_to_regularize():
    x, y = data()
    net = model()
    net.compile(optimizer="sgd", loss="mse")
    with pytest.warns(UserWarning, match=r"keras_l1l2plus\.regularize\(model, \.\.\.\)"):
        net.fit(x, y, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger()])
    kl.regularize(net, l2_weight=0.1)  # the call, with a λ for its "..."
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert net.fit(x, y, epochs=1, verbose=0, callbacks=[kl.PenaltyLogger()]).history["penalty"][0] > 0
