"""Keras tests that pass plain and fail with the plugin injected, each with its reason.

Made on Keras 3.15.1 with TensorFlow 2.21.

Keys are pytest node ids under site-packages (as run.py prints them). Kinds of reason:
  keys       the logger's extra log keys or TensorBoard tags; listed only when masking them
             (MASKED) cannot keep the test's other assertions
  penalty    the test asserts an exact loss, and the loss now holds the penalty
  dense      the test asserts a sparse gradient, and the penalty's gradient is dense
  underflow  the test asserts a gradient underflows in float16; the penalty's does not
The last three are the penalty's, not the plugin's: run.py reruns each of them with Keras's own
keras.regularizers.L1L2(1e-6, 1e-6) on the same variables instead (KL_INJECT=keras_l1l2) and
fails unless the test fails there with the same message.
"""

from collections import namedtuple

Entry = namedtuple("Entry", "kind modes reason backends", defaults=[("tensorflow",)])

TRAINER = "keras/src/trainers/trainer_test.py::TestTrainer::"
CALLBACKS = "keras/src/callbacks/"

BOTH = ("both", "regularize")  # the penalty's effects: every mode that regularizes
LOGGED = ("both", "logger")  # the logger's: every mode that attaches one
RETURN_DICT = ("evaluate(..., return_dict=True) holds the logger's keys beside Keras's, by design "
               "(docs/logging.md); Keras's CallbackList hands callbacks a copy of those logs, so "
               "no mask reaches the returned dict. Without return_dict, evaluate returns what "
               "Keras returns (test_evaluate_with_custom_test_step_flat passes)")
EXPECTED = {
    TRAINER + "test_evaluate_with_custom_test_step_dict": Entry("keys", LOGGED, RETURN_DICT),
    TRAINER + "test_recompile": Entry("keys", LOGGED, RETURN_DICT + "; its History part is masked"),
    # An exact loss: ExampleModel (kernel of ones, 4×3) + MSE of 16 against zeros; the penalty
    # adds 1e-6·12 + 1e-6·12 = 2.4e-5 > the 1e-6 tolerance.
    **{TRAINER + f"test_evaluate_flow_{m}": Entry(
        "penalty", BOTH, "evaluate's loss 16.000024 != 16.0, the penalty; "
        "Keras's L1L2(1e-6, 1e-6) fails it identically")
       for m in ("eager", "graph_fn", "jit")},
    TRAINER + "test_nested_inputs": Entry(
        "penalty", BOTH, "fit's loss 16.00002 != 16.0, the penalty; "
        "Keras's L1L2(1e-6, 1e-6) fails it identically"),
    # The sparse-gradient check: IndexedSlices must reach the optimizer. The penalty's gradient
    # λ1·sign(W) + 2λ2·W is dense over the whole kernel, so the sum is dense too.
    **{TRAINER + f"test_fit_sparse_{g}_{m}": Entry(
        "dense", BOTH, "the kernel's gradient is dense: data gradient (IndexedSlices) + the "
        "penalty's (dense); Keras's L1L2(1e-6, 1e-6) fails it identically")
       for g in ("tf", "scipy") for m in ("eager", "graph")},
    # 15 sigmoid Dense layers in float16, SGD(lr=1e9): without loss scaling the first kernel's
    # data gradient underflows to 0 and the test asserts the kernel stays 1. The penalty's
    # gradient (3e-6, a float16 subnormal) does not underflow: 1 - 1e9·3e-6 = -2999.
    TRAINER + "test_loss_scaling_prevents_underflow": Entry(
        "underflow", BOTH, "the penalty's own gradient moves the kernel the test expects "
        "frozen by underflow; Keras's L1L2(1e-6, 1e-6) fails it identically"),
}

# Tests that see only the logger's extra keys: inject.py hides the keys from their callbacks
# and History (modes both and logger), so the rest of each test still runs.
MASKED = {
    TRAINER + "test_callback_methods_keys": "asserts the exact keys of every hook's logs",
    TRAINER + "test_recompile": "asserts the exact keys of history.history",
    CALLBACKS + "csv_logger_test.py::CSVLoggerTest::test_CSVLogger": "counts the CSV columns",
    CALLBACKS + "remote_monitor_test.py::TerminateOnNaNTest::test_RemoteMonitorWithJsonPayload":
        "asserts the exact JSON payload posted",
    **{CALLBACKS + "tensorboard_test.py::TestTensorBoardV2::" + t: "asserts the exact set of "
       "TensorBoard tags" for t in (
        "test_TensorBoard_across_invocations", "test_TensorBoard_basic",
        "test_TensorBoard_batch_metrics", "test_TensorBoard_global_step",
        "test_TensorBoard_learning_rate_schedules", "test_TensorBoard_weight_histograms",
        "test_TensorBoard_weight_images", "test_custom_summary")},
}


def for_run(mode, backend):
    """The entries that apply to a run of `mode` on `backend`."""
    return {t: e for t, e in EXPECTED.items() if mode in e.modes and backend in e.backends}
