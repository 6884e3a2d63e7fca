"""Any spec, however mangled, gets diagnostics with a place — never a traceback."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from engine.load import check_spec

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "tests" / "broken" / "_base.yaml", ROOT / "specs" / "esrgan.yaml"]
VALUES: list[Any] = [
    None,
    0,
    -1,
    1.5,
    "x",
    "$nf",
    "$",
    "$1/0",
    [],
    {},
    [1, 2],
    {"a": 1},
    True,
    "data.lr",
    "G",
    "fake.sr",
    "lib/none.yaml#X",
    10**9,
    "a.b.c.d",
]
KEYS = ["zz", "in", "block", "repeat", "call", "op", "loss", "until", "params", "_replace"]


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, (*prefix, i))
    return found


def _mutate(data: dict[str, Any], rng: random.Random) -> None:
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(_paths(data))
        node = data
        for part in path[:-1]:
            node = node[part]
        value = copy.deepcopy(rng.choice(VALUES))
        if isinstance(node, dict) and rng.random() < 0.2:
            node[rng.choice(KEYS)] = value
        else:
            node[path[-1]] = value


def test_mangled_specs_get_located_diagnostics(tmp_path: Path) -> None:
    yaml = YAML(typ="safe")
    originals = []
    for source in SOURCES:
        data = yaml.load(source.read_text(encoding="utf-8"))
        data.pop("extends", None)
        originals.append(data)
    rng = random.Random(1234)
    path = tmp_path / "mangled.yaml"
    invalid = 0
    for _ in range(150):
        data = copy.deepcopy(rng.choice(originals))
        _mutate(data, rng)
        with path.open("w", encoding="utf-8") as handle:
            yaml.dump(data, handle)
        spec, diags = check_spec(path)  # must not raise
        for diag in diags:
            assert diag.loc is not None and diag.loc.line > 0, str(diag)
        invalid += spec is None
    assert invalid > 100  # the mutations really break specs
