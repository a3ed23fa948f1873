"""pytest plugin: Keras's own tests, with keras-l1l2plus attached to every model they train.

How the plugin attaches, as a user would: on the outermost `fit` or `evaluate` of a
model (not the `evaluate` that `fit` runs for validation, nor one a callback runs),

    keras_l1l2plus.regularize(model, l1_weight=1e-6, l2_weight=1e-6)   # first call only
    callbacks = [*callbacks, keras_l1l2plus.PenaltyLogger()]

KL_INJECT picks what is attached:
    off         nothing (the plain run; the shims at the end of this file still apply)
    both        regularize (a model's first outermost call) and a PenaltyLogger (every one)
    logger      the PenaltyLogger only (on an unregularized model: it logs zeros, and warns)
    regularize  regularize only
    keras_l1l2  Keras's own keras.regularizers.L1L2(1e-6, 1e-6) on the variables `regularize`
                would give l1_weight/l2_weight, and no logger: the control for "the test fails
                only because the loss now holds a penalty" (see expected.py)

Tests in KL_MASK (a file of node ids, one a line; run.py writes it from expected.MASKED) get
the logger's keys hidden: a callback placed first in `callbacks` drops them from the logs dict
that Keras hands to every callback in turn (History, ProgbarLogger, CSVLogger, TensorBoard,
the test's own), so a test that sees only extra keys runs all its other assertions.

Loaded by run.py as `-p inject` with this directory on PYTHONPATH.
"""

import functools
import inspect
import os
import sys
import types
import weakref

import keras
import pytest

MODE = os.environ.get("KL_INJECT", "off")
MODES = ("off", "both", "logger", "regularize", "keras_l1l2")
if MODE not in MODES:
    raise ValueError(f"KL_INJECT={MODE!r}; expected one of {MODES}")
LAMBDA = 1e-6

# The class whose fit/evaluate every model on this backend runs: keras.Model's first base that
# defines `fit` (TensorFlowTrainer, JAXTrainer, TorchTrainer). Keras's trainer_test models
# subclass it directly, without keras.Model, so patching keras.Model would miss them.
TRAINER = next(c for c in keras.Model.__mro__ if "fit" in vars(c))

_seen = weakref.WeakSet()  # models regularized already (regularize once per model)
_depth = 0  # fit/evaluate calls in progress; 1 = outermost
_masked = set()  # node ids whose tests get the logger's keys hidden
_current = None  # node id of the running test


class HideKeys(keras.callbacks.Callback):
    """First in `callbacks`: drops `logger`'s keys from the logs the callbacks after it get."""

    async_safe = True  # it only edits the logs dict, like the PenaltyLogger

    def __init__(self, logger):
        super().__init__()
        self.logger = logger

    def _hide(self, logs):
        for key in self.logger.keys if logs else ():  # the keys the logger attached
            logs.pop(key, None)
            logs.pop("val_" + key, None)  # fit's epoch logs: the validation run's, renamed

    def on_train_batch_end(self, batch, logs=None):
        self._hide(logs)

    def on_test_batch_end(self, batch, logs=None):
        self._hide(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._hide(logs)

    def on_test_end(self, logs=None):
        self._hide(logs)

    def on_train_end(self, logs=None):
        self._hide(logs)


def _keras_l1l2(model):
    """The control: Keras's own L1L2 where `regularize` would put l1_weight/l2_weight."""
    import keras_l1l2plus as kl

    kl.regularize(model, l1_weight=LAMBDA, l2_weight=LAMBDA)  # chooses the variables
    for layer in model._flatten_layers():
        for name, value in list(vars(layer).items()):  # kernel_regularizer, ...: for saving
            if name.endswith("_regularizer") and isinstance(value, kl.L1L2Plus):
                setattr(layer, name, keras.regularizers.L1L2(LAMBDA, LAMBDA))
    for variable in model.trainable_variables:
        if isinstance(variable.regularizer, kl.L1L2Plus):
            variable.regularizer = keras.regularizers.L1L2(LAMBDA, LAMBDA)
    # The step functions `regularize` rebuilt are traced at their first call, so with L1L2.


def _attach(model, bound):
    """Regularizes `model` (once) and adds the logger to this call's `callbacks`."""
    import keras_l1l2plus as kl

    if model not in _seen and MODE in ("both", "regularize", "keras_l1l2"):
        _seen.add(model)
        if MODE == "keras_l1l2":
            _keras_l1l2(model)
        else:
            kl.regularize(model, l1_weight=LAMBDA, l2_weight=LAMBDA)
    if MODE in ("both", "logger"):
        callbacks = bound.arguments.get("callbacks") or []
        if isinstance(callbacks, keras.callbacks.CallbackList):
            return  # a ready-made CallbackList is the test's own; left alone
        logger = kl.PenaltyLogger()
        masks = [HideKeys(logger)] if _current in _masked else []
        bound.arguments["callbacks"] = [*masks, *callbacks, logger]  # a new list


def _outermost(method):
    signature = inspect.signature(method)

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        global _depth
        if _depth == 0 and MODE != "off":
            bound = signature.bind(self, *args, **kwargs)
            _attach(self, bound)
            args, kwargs = bound.args[1:], bound.kwargs
        _depth += 1
        try:
            return method(self, *args, **kwargs)
        finally:
            _depth -= 1

    return wrapper


TRAINER.fit = _outermost(TRAINER.fit)
TRAINER.evaluate = _outermost(TRAINER.evaluate)


def pytest_configure(config):
    path = os.environ.get("KL_MASK")
    if path and MODE in ("both", "logger"):
        with open(path) as f:
            _masked.update(line.strip() for line in f if line.strip())
    # Keras's repository conftest (not in the wheel) registers these markers.
    config.addinivalue_line("markers", "requires_trainable_backend: needs a trainable backend")
    config.addinivalue_line("markers", "multi_device: needs several devices")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    global _current, _depth
    _current, _depth = item.nodeid, 0
    try:
        return (yield)
    finally:
        _current = None


# Shims for what Keras's tests take from Keras's repository rather than the wheel; the plain
# and the injected runs both get them.
# - remote_monitor_test imports `skip_if_backend` from the repository's conftest.py.
_conftest = types.ModuleType("conftest", "Keras's repository conftest, the part its tests import")
_conftest.skip_if_backend = lambda backend, reason: pytest.mark.skipif(
    keras.backend.backend() == backend, reason=reason
)
sys.modules.setdefault("conftest", _conftest)
# - trainer_test imports jax at the top, for its JAX-only cases. Without JAX installed, a
#   placeholder stands in while the test files are imported, and is gone before any test runs.
try:
    import jax  # noqa: F401
except ImportError:
    sys.modules["jax"] = types.ModuleType("jax", "placeholder: JAX is not installed")

    def pytest_collection_finish(session):
        sys.modules.pop("jax", None)
