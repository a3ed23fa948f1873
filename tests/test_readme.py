"""Every ```python block of README.md and of docs/*.md runs as pasted, in a fresh process."""

import re
from pathlib import Path

import pytest
from backends import BACKEND

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GUIDES = sorted((ROOT / "docs").glob("*.md"))


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", path.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)


BLOCKS = [(path, i, code) for path in (README, *GUIDES) for i, code in enumerate(python_blocks(path))]


def needs_tensorflow(code: str) -> bool:
    """Blocks that use TensorFlow itself, or Keras's TensorBoard callback (which writes through it)."""
    imports_tensorflow = re.search(r"^\s*(import|from)\s.*\btensorflow\b", code, flags=re.MULTILINE)
    return bool(imports_tensorflow) or "keras.callbacks.TensorBoard" in code


def test_the_readme_and_the_guides_have_their_blocks():
    # A parse that finds nothing must not pass.
    assert len(python_blocks(README)) >= 1
    names = {path.name for path in GUIDES}
    assert {"install.md", "regularizer.md", "logging.md", "proximal.md", "schedules.md"} <= names
    for name in ("install.md", "regularizer.md", "logging.md", "proximal.md", "schedules.md"):
        assert python_blocks(ROOT / "docs" / name), f"docs/{name} has no ```python block"
    assert len(BLOCKS) >= 12
    assert needs_tensorflow("import keras, numpy as np, tensorflow as tf") and not needs_tensorflow("import keras")


@pytest.mark.parametrize(
    "path, index, code", BLOCKS,
    ids=[f"{path.relative_to(ROOT)}-block{i}-{code.splitlines()[0][:30]}" for path, i, code in BLOCKS],
)
def test_block_runs_as_pasted(path, index, code, fresh_python, tmp_path):
    if needs_tensorflow(code) and BACKEND != "tensorflow":
        pytest.skip("this block is TensorFlow's (tf.GradientTape, or Keras's TensorBoard callback)")
    fresh_python(code, cwd=tmp_path)  # fails on any exception, with the block's output
