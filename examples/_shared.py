"""What the examples share: loading Keras without TensorFlow's C++ log lines,
and the command that opens TensorBoard.

TensorFlow 2.21 prints its C++ logs through absl. `TF_CPP_MIN_LOG_LEVEL=3`,
set before TensorFlow loads, hides those written after start-up (INFO,
WARNING and ERROR, such as `failed call to cuInit`); the six lines written
while its two libraries load (`All log messages before absl::InitializeLog()`,
`oneDNN custom operations are on`, `Could not find cuda drivers`, each twice)
come before any setting is read. So the import runs with the
process's native stderr (file descriptor 2) sent to /dev/null; Python's own
errors are raised after it is restored, so a failing import still says why.

The examples parse their arguments first and load Keras after, so `--help`
answers at once.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from pathlib import Path


@contextlib.contextmanager
def native_stderr_silenced():
    """While the block runs, whatever writes to file descriptor 2 writes to /dev/null."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def load_keras():
    """`import keras, keras_l1l2plus` quietly; returns the `keras` module."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with native_stderr_silenced():
        import keras
        import keras_l1l2plus  # noqa: F401
    return keras


def tensorboard_command(log_dir: Path) -> str:
    """A command that starts TensorBoard on `log_dir`, whether or not a venv is activated."""
    script = Path(sys.executable).with_name("tensorboard")
    if script.exists():
        try:
            script = script.relative_to(Path.cwd())
        except ValueError:
            pass
        return f"{shlex.quote(str(script))} --logdir {shlex.quote(str(log_dir))}"
    return f"{shlex.quote(sys.executable)} -m tensorboard.main --logdir {shlex.quote(str(log_dir))}"
