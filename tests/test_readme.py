"""Every ```python block of the README runs as pasted, in a fresh process."""

import re
from pathlib import Path

import pytest
from backends import BACKEND

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", README.read_text(), flags=re.DOTALL | re.MULTILINE)


def needs_tensorflow(code: str) -> bool:
    """Blocks that use TensorFlow itself, or Keras's TensorBoard callback (which writes through it)."""
    imports_tensorflow = re.search(r"^\s*(import|from)\s.*\btensorflow\b", code, flags=re.MULTILINE)
    return bool(imports_tensorflow) or "keras.callbacks.TensorBoard" in code


def test_the_readme_has_its_blocks():
    assert len(BLOCKS) >= 7  # a parse that finds nothing must not pass
    assert needs_tensorflow("import keras, numpy as np, tensorflow as tf") and not needs_tensorflow("import keras")


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}-line{c.splitlines()[0][:30]}" for i, c in enumerate(BLOCKS)])
def test_block_runs_as_pasted(code, fresh_python, tmp_path):
    if needs_tensorflow(code) and BACKEND != "tensorflow":
        pytest.skip("this block is TensorFlow's (tf.GradientTape, or Keras's TensorBoard callback)")
    fresh_python(code, cwd=tmp_path)  # fails on any exception, with the block's output
