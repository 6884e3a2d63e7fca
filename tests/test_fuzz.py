"""Random YAML documents against ``validate``: valid or a located error, never a crash.

Each document is built from a seeded generator: random nesting of mappings, lists and
scalars in block and flow style; keys drawn from the spec language's own words
(sections, node keys, block names and their parameters, losses, option names, taken
from the schemas) and from junk; anchors, aliases (also to anchors never defined) and
merge keys; odd scalars (huge integers, ``.nan``, ``.inf``, dates, ``!!binary`` and
other tags, non-ASCII text) and ``$`` expressions of random operators. About half of
the documents are shaped like a spec (networks of nodes, a graph, optimizers, phases,
data) so that the random parts reach expansion and the semantic checks, not only the
schema.

Every document goes through the command line's own ``validate`` in this process (one
torch-free import, then milliseconds a case): the exit code must be 0 or 2, nothing
may print a traceback, each case must finish within a time bound, and the process's
peak memory must stay bounded. The mutation fuzz of shipped specs is
tests/test_robustness.py; crashes found here are fixed with their minimal document as
a regression case in tests/test_hostile_specs.py.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import cli
from engine.spec.catalog import default_catalog
from engine.spec.skeleton import SPEC

ROOT = Path(__file__).resolve().parents[1]
CASE_SECONDS = 5.0  # one document, on a loaded two-core machine
MEMORY_GROWTH = 400 * 2**20  # bytes the peak RSS may grow over a whole run
SLOTS = 24  # places of the little spec that may be replaced (about as many as it has)


def _schema_words(schema: Any, words: set[str]) -> None:
    """Every property name and string choice anywhere in the spec's schema."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "properties" and isinstance(value, dict):
                words.update(value)
            if key == "enum" and isinstance(value, list):
                words.update(v for v in value if isinstance(v, str))
            _schema_words(value, words)
    elif isinstance(schema, list):
        for item in schema:
            _schema_words(item, words)


def _vocabulary() -> tuple[list[str], list[str], list[str], list[str]]:
    """(keywords, block names, loss names, section names) of the spec language."""
    catalog = default_catalog()
    words: set[str] = set()
    _schema_words(SPEC, words)
    for entry in catalog.entries.values():
        words.update(entry.params)
    blocks = catalog.names("module")
    losses = catalog.names("loss")
    words.update(catalog.names())
    sections = sorted(SPEC["properties"])
    return sorted(words), blocks, losses, sections


KEYWORDS, BLOCKS, LOSSES, SECTIONS = _vocabulary()
OPS = default_catalog().names("op")
NODE_KEYS = ["block", "in", "repeat", "when", "init", "chain", "share", "use", "params"]
REFS = ["lr", "x", "data.lr", "data.hr", "fake", "fake.sr", "G", "D", "head", "body", "a.b"]
LIBRARIES = [
    "lib/esrgan.yaml",
    "lib/esrgan.yaml#RRDBNet",
    "lib/srvgg.yaml#SRVGGNetCompact",
    "lib/discriminators.yaml#vgg128",
    "lib/none.yaml",
    "../../../../etc/passwd",
    "/etc/hostname",
    "builtin:photos",
    "builtin:nothing",
]
JUNK_KEYS = [
    "",
    " ",
    "0",
    "-1",
    "é",
    "ключ",
    "键",
    "a.b",
    "$nf",
    "<<x",
    "in ",
    "k" * 150,
    "_replace",
]
ODD_SCALARS = [
    ".nan",
    ".NaN",
    ".inf",
    "-.inf",
    "+.inf",
    "~",
    "null",
    "Null",
    "yes",
    "no",
    "on",
    "off",
    "y",
    "n",
    "true",
    "False",
    "0x1F",
    "0o17",
    "017",
    "0b101",
    "1_000",
    "1e400",
    "-1e-400",
    "6.02e23",
    "-0",
    ".5",
    "1.",
    "123456789012345678901234567890123456789",
    "-98765432109876543210987654321",
    str(2**63),
    str(2**64 + 1),
    "2024-01-31",
    "2001-12-14t21:59:43.10-05:00",
    "12:30:45",
    "!!binary R0lGODlhDAAMAIQAAP//9/X17unp5WZmZgAAAOfn515eXvPz7Y6OjuDg4J+fn5",
    "!!str 3",
    "!!int '7'",
    "!!float 1",
    "!!bool yes",
    "!!null ''",
    "!!set {a, b}",
    "!!timestamp 2001-12-14",
    "!!python/object/apply:os.system ['true']",
    "!custom value",
    "'single ''quoted'''",
    '"tab\\there \\u00e9 \\U0001F600"',
    "'日本語のテキスト'",
    "Ωμέγα",
    "'\u202eevil'",
    '"\\0 nul"',
    "|\n  literal\n  block",
    ">-\n  folded\n  text",
]
EXPR_NAMES = ["$nf", "$scale", "$index", "$gc", "$x", "$missing", "$__class__", "$True"]
EXPR_ATOMS = ["0", "1", "2", "-1", "64", "3.5", "1e308", "10 ** 64", "'s'", "[1, 2]", "[]", "True"]
BINARY = ["+", "-", "*", "/", "//", "%", "**", "<", "<=", "==", "!=", ">", "and", "or", "&", "<<"]
FUNCTIONS = ["min", "max", "abs", "int", "float", "round", "floor", "ceil", "log2", "len", "eval"]


def mapping(*pairs: tuple[str, Any]) -> dict[str, Any]:
    """A mapping of the generator's trees: its (key, value) pairs, so keys may repeat."""
    return {"pairs": list(pairs)}


class Generator:
    """Random YAML text from one seeded ``random.Random``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.anchors: list[str] = []

    # -- pieces ----------------------------------------------------------------------

    def expression(self, depth: int = 0) -> str:
        r = self.rng
        if depth > 3 or r.random() < 0.3:
            return r.choice(EXPR_NAMES + EXPR_ATOMS)
        kind = r.random()
        if kind < 0.45:
            a, b = self.expression(depth + 1), self.expression(depth + 1)
            return f"({a} {r.choice(BINARY)} {b})"
        if kind < 0.6:
            return f"{r.choice(['-', 'not ', '~', '+'])}{self.expression(depth + 1)}"
        if kind < 0.75:
            args = ", ".join(self.expression(depth + 1) for _ in range(r.randint(0, 3)))
            return f"{r.choice(FUNCTIONS)}({args})"
        if kind < 0.85:
            a, b, c = (self.expression(depth + 1) for _ in range(3))
            return f"({a} if {b} else {c})"
        if kind < 0.92:
            return f"{self.expression(depth + 1)}[{self.expression(depth + 1)}]"
        return r.choice(["lambda: 1", "x.y", "().__class__", "{1: 2}", "(1, 2)", "*a", "a :="])

    def scalar(self) -> str:
        r = self.rng
        kind = r.random()
        if kind < 0.25:
            return r.choice(ODD_SCALARS)
        if kind < 0.45:
            text = self.expression()
            text = text if text.startswith("$") else "$" + text
            return json.dumps(text, ensure_ascii=r.random() < 0.5)
        if kind < 0.6:
            return str(r.choice([0, 1, 2, 3, 4, 8, 16, 64, -1, 10**9, 2**31, 10**30]))
        if kind < 0.7:
            return r.choice(["0.5", "1.0e-4", "-2.5", "1e9", "0.0"])
        if kind < 0.85:
            return self.word()
        if kind < 0.93:
            return json.dumps(r.choice(REFS + LIBRARIES + LOSSES + BLOCKS))
        if kind < 0.97:
            return "*" + r.choice(self.anchors) if self.anchors else self.word()
        if kind < 0.9705:
            return "*never_defined"
        return r.choice(["''", '""', json.dumps("x" * r.randint(0, 300))])

    def word(self) -> str:
        r = self.rng
        kind = r.random()
        if kind < 0.7:
            return r.choice(KEYWORDS)
        if kind < 0.85:
            return r.choice(BLOCKS + LOSSES + OPS + SECTIONS)
        return json.dumps(r.choice(JUNK_KEYS), ensure_ascii=False)

    def key(self, preferred: list[str] | None = None) -> str:
        r = self.rng
        if preferred and r.random() < 0.6:
            return r.choice(preferred)
        if r.random() < 0.05:
            return r.choice(["1", "2.5", "true", "null", "~", "? [a, b]", "[x]", "{a: 1}"])
        return self.word()

    def anchor(self) -> str:
        if self.rng.random() < 0.12:
            name = f"a{len(self.anchors)}"
            self.anchors.append(name)
            return f"&{name} "
        return ""

    # -- values ----------------------------------------------------------------------

    def value(self, depth: int, keys: list[str] | None = None) -> Any:
        """A tree: dict (list of (key, value) pairs, so keys may repeat), list or str."""
        r = self.rng
        if depth > 6 or r.random() < 0.35:
            return self.scalar()
        if r.random() < 0.55:
            pairs = [(self.key(keys), self.value(depth + 1)) for _ in range(r.randint(0, 5))]
            if self.anchors and r.random() < 0.15:
                pairs.insert(r.randrange(len(pairs) + 1), ("<<", "*" + r.choice(self.anchors)))
            return mapping(*pairs)
        return [self.value(depth + 1, keys) for _ in range(r.randint(0, 4))]

    def spec_like(self) -> Any:
        """A valid little spec in which a few parts (1 to 4) are replaced by random ones:
        a random node, parameter, reference, section or value where the spec has one,
        or one value of a mapping the spec has (``inputs: {lr: .nan}``)."""
        r = self.rng
        slots = set(r.sample(range(SLOTS), r.randint(1, 4)))
        count = itertools.count()

        def slot(valid: Any, keys: list[str] | None = None) -> Any:
            """``valid``, or something random in its place when this slot was drawn."""
            if next(count) not in slots:
                return valid() if callable(valid) else valid
            base = valid() if callable(valid) else valid
            choice = r.random()
            if isinstance(base, dict) and base["pairs"] and choice < 0.35:
                pairs = list(base["pairs"])
                i = r.randrange(len(pairs))
                pairs[i] = (pairs[i][0], self.scalar() if r.random() < 0.7 else self.value(3))
                return mapping(*pairs)
            if choice < 0.6:
                return self.scalar()
            if choice < 0.75:
                return json.dumps(r.choice(REFS + BLOCKS + LOSSES + LIBRARIES))
            return self.value(3, keys)

        def node() -> Any:
            pairs = [
                ("block", slot('"conv"')),
                ("in", slot('"head"', NODE_KEYS)),
                ("out" if r.random() < 0.7 else r.choice(KEYWORDS), slot("16")),
            ]
            if r.random() < 0.3:
                pairs.append((r.choice([*NODE_KEYS, *KEYWORDS]), self.scalar()))
            return mapping(*pairs)

        def network() -> Any:
            if r.random() < 0.2:
                library = json.dumps(r.choice(LIBRARIES[:3]))
                return mapping(("use", slot(library)), ("params", slot(mapping(), KEYWORDS)))
            nodes = mapping(
                ("head", mapping(("block", '"conv"'), ("in", '"lr"'), ("out", "16"))),
                (r.choice(["body", "up", "0", "x"]), slot(node, NODE_KEYS)),
                ("tail", slot(mapping(("block", slot('"conv"')), ("in", '"head"'), ("out", "12")))),
                ("shuf", mapping(("block", '"pixel_shuffle"'), ("in", '"tail"'), ("scale", "2"))),
            )
            return mapping(
                ("inputs", slot(mapping(("lr", "3")))),
                ("params", slot(mapping(("nf", "16")), KEYWORDS)),
                ("nodes", nodes),
                ("outputs", slot(mapping(("sr", '"shuf"')))),
            )

        graph = mapping(
            ("fake", slot(mapping(("call", slot('"G"')), ("in", '"data.lr"')))),
            ("pix", slot(mapping(("loss", slot('"l1"')), ("in", '["fake.sr", "data.hr"]')))),
        )
        optimizer = slot(mapping(("type", slot('"adam"')), ("params", '"G"'), ("lr", "1.0e-4")))
        step = mapping(("optimizer", '"G"'), ("minimize", slot(mapping(("pix", "1.0")))))
        phase = slot(mapping(("name", '"main"'), ("steps", [step])))
        train = slot(mapping(("iterations", "100"), ("phases", [phase])))
        data = slot(
            mapping(
                ("type", '"sr"'),
                ("hr", slot('"builtin:photos"')),
                ("crop_size", "32"),
                ("batch_size", "2"),
            )
        )
        sections: list[tuple[str, Any]] = [
            ("spec", "1"),
            ("name", '"fuzz"'),
            ("scale", slot("2")),
            ("networks", mapping(("G", network()))),
            ("graph", graph),
            ("optimizers", mapping(("G", optimizer))),
            ("train", train),
            ("data", mapping(("train", data))),
        ]
        present = {key for key, _ in sections}
        if r.random() < 0.3:
            sections.append((r.choice([s for s in SECTIONS if s not in present]), self.value(1)))
        if r.random() < 0.1:
            sections.append(("extends", json.dumps(r.choice(LIBRARIES))))
        return mapping(*sections)

    # -- text ------------------------------------------------------------------------

    def flow(self, tree: Any, depth: int = 0) -> str:
        if isinstance(tree, dict):
            items = ", ".join(f"{k}: {self.flow(v, depth + 1)}" for k, v in tree["pairs"])
            return self.anchor() + "{" + items + "}"
        if isinstance(tree, list):
            return self.anchor() + "[" + ", ".join(self.flow(v, depth + 1) for v in tree) + "]"
        if tree.startswith(("|", ">")):  # a block scalar has no flow form
            return json.dumps(tree)
        return tree

    def block(self, tree: Any, indent: int) -> list[str]:
        """Lines of ``tree`` as a block collection at ``indent`` spaces."""
        pad = " " * indent
        lines: list[str] = []
        if isinstance(tree, dict):
            for key, value in tree["pairs"]:
                lines += self._entry(f"{pad}{key}:", value, indent)
        else:
            for value in tree:
                lines += self._entry(f"{pad}-", value, indent)
        return lines

    def _entry(self, head: str, value: Any, indent: int) -> list[str]:
        r = self.rng
        nested = value["pairs"] if isinstance(value, dict) else value
        if isinstance(value, dict | list) and nested and r.random() < 0.7:
            anchor = self.anchor().strip()
            return [f"{head} {anchor}".rstrip(), *self.block(value, indent + 2)]
        text = self.flow(value)
        if "\n" in text:  # a block scalar: its lines indented under the key
            first, *rest = text.split("\n")
            return [f"{head} {first}", *(" " * (indent + 2) + line.strip() for line in rest)]
        anchor = "" if isinstance(value, dict | list) else self.anchor()
        return [f"{head} {anchor}{text}"]

    def document(self) -> str:
        self.anchors = []
        r = self.rng
        if r.random() < 0.5:
            tree = self.spec_like()
        else:
            tree = self.value(0, SECTIONS) if r.random() < 0.8 else self.scalar()
        if isinstance(tree, dict | list) and r.random() < 0.85:
            lines = self.block(tree, 0) if tree else [self.flow(tree)]
        else:
            lines = [self.flow(tree)]
        if r.random() < 0.05:
            lines.insert(r.randrange(len(lines) + 1), r.choice(["---", "...", "%YAML 1.1", "\t"]))
        return "\n".join(lines) + "\n"


def _peak_rss() -> int:
    """The process's peak resident memory, in bytes (ru_maxrss is in KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _validate(path: Path) -> tuple[int, str]:
    """The command line's validate on ``path``, in this process: (exit code, output)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = cli.main(["validate", str(path)])
    return code, out.getvalue()


def fuzz(folder: Path, seed: int, *, seconds: float, cases: int) -> dict[str, int]:
    """Validate up to ``cases`` documents of ``seed`` within ``seconds``; assert on each."""
    gen = Generator(random.Random(seed))
    counts = {"cases": 0, "valid": 0, "invalid": 0}
    start_rss = _peak_rss()
    started = time.perf_counter()
    for i in range(cases):
        if time.perf_counter() - started > seconds:
            break
        text = gen.document()
        path = folder / f"fuzz_{seed}_{i}.yaml"
        path.write_text(text, encoding="utf-8")
        began = time.perf_counter()
        try:
            code, output = _validate(path)
        except BaseException as exc:  # a crash: show the document that caused it
            raise AssertionError(
                f"validate raised {exc!r} on seed {seed} case {i}:\n{text}"
            ) from exc
        took = time.perf_counter() - began
        assert code in (0, 2), f"exit code {code} on seed {seed} case {i}:\n{text}\n{output}"
        assert "Traceback" not in output, f"a traceback on seed {seed} case {i}:\n{text}\n{output}"
        assert took < CASE_SECONDS, f"{took:.1f} s on seed {seed} case {i}:\n{text}"
        grown = _peak_rss() - start_rss
        assert grown < MEMORY_GROWTH, f"peak memory grew {grown >> 20} MiB by case {i}:\n{text}"
        counts["cases"] += 1
        counts["valid" if code == 0 else "invalid"] += 1
        path.unlink()
    return counts


def test_random_yaml_documents_validate_or_fail_with_located_errors(tmp_path: Path) -> None:
    counts = fuzz(tmp_path, seed=18, seconds=6.0, cases=400)
    assert counts["cases"] >= 20, counts  # the budget really ran documents (a loaded machine)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_yaml_documents_for_longer(tmp_path: Path, seed: int) -> None:
    counts = fuzz(tmp_path, seed=seed, seconds=30.0, cases=100_000)
    assert counts["cases"] >= 200, counts
