"""The package's plan: each module on a floor, imports pointing down, no cycles (docs/design.md lists the modules)."""

import ast
from pathlib import Path

import keras_l1l2plus

PACKAGE = Path(keras_l1l2plus.__file__).parent

# Lowest first. A module imports only from floors below its own.
FLOORS = [
    {"_keras", "factors", "logger.progress", "shrink"},  # the seam; λ and argument validation; the progress line;
    # shrink (a smaller model from zero units: public Keras only, no package import)
    {"regularizer", "roles", "steps"},  # the penalty math; weight vs bias; step functions
    {"terms", "proximal", "describe"},  # a model's terms; the proximal optimizer; what every variable gets
    {"apply", "schedule", "tensorboard_layout", "logger.metric"},  # regularize; λ schedules; the logger's metric
    {"logger.attachment"},  # the logger's state machine
    {"logger.callback"},  # PenaltyLogger
    {"logger", "path"},  # the wing's public name; the regularization path (fits with a schedule and a logger)
    {""},  # keras_l1l2plus: the public names
]


def imports():
    """{module: the package's modules it imports}, names relative to the package."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix("__init__").rstrip(".")
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("keras_l1l2plus"):
                base = node.module.removeprefix("keras_l1l2plus").lstrip(".")
                found |= {f"{base}.{a.name}".lstrip(".") for a in node.names} if not base else {base}
            elif isinstance(node, ast.Import):
                found |= {a.name.removeprefix("keras_l1l2plus").lstrip(".") for a in node.names
                          if a.name.startswith("keras_l1l2plus.")}
        graph[name] = found
    modules = set(graph)
    return {name: {d for d in deps if d in modules} for name, deps in graph.items()}


def test_every_module_is_on_one_floor():
    graph = imports()
    placed = [m for floor in FLOORS for m in floor]
    assert len(placed) == len(set(placed))
    assert set(placed) == set(graph), f"modules off the plan: {set(graph) ^ set(placed)}"
    assert len(graph) >= 15  # the walk found the package


def test_imports_point_down():
    floor_of = {module: i for i, floor in enumerate(FLOORS) for module in floor}
    upward = [(m, d) for m, deps in imports().items() for d in deps if floor_of[d] >= floor_of[m]]
    assert not upward, f"imports that do not point down: {upward}"


def test_no_cycles():
    graph = imports()
    state = {}

    def visit(module, path):
        if state.get(module) == "open":
            raise AssertionError(f"import cycle: {' -> '.join(path + [module])}")
        if state.get(module) != "done":
            state[module] = "open"
            for dep in graph[module]:
                visit(dep, path + [module])
            state[module] = "done"

    for module in graph:
        visit(module, [])
