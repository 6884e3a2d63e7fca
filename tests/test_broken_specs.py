"""The broken-spec corpus: every file under tests/broken/ must fail exactly as it says.

Each file ends with comment lines that state what ``validate`` must report:

    # expect: LINE:COL: gist of the message               (in the file itself)
    # expect: lib/bad_lib.yaml:6:40: gist                   (in another file)
    # expect: <override a.b=1>:1:3: gist                    (in an override)
    # expect-warning: LINE:COL: gist
    # overrides: a.b=1 c.d=2                                (applied while validating)

The errors reported must be exactly the expected ones: no more, no fewer.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.load import check_spec

BROKEN = Path(__file__).parent / "broken"
CASES = sorted(p for p in BROKEN.glob("*.yaml") if not p.name.startswith("_"))
EXPECT = re.compile(r"^# (expect|expect-warning): (?:(<override [^>]*>|\S+):)?(\d+):(\d+): (.+)$")


def _expectations(path: Path) -> tuple[list[tuple[str, int, int, str, str]], list[str]]:
    expected, overrides = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# overrides:"):
            overrides = line.split(":", 1)[1].split()
        m = EXPECT.match(line)
        if m:
            tag, where, row, col, gist = m.groups()
            severity = "error" if tag == "expect" else "warning"
            expected.append((severity, where or path.name, int(row), int(col), gist.strip()))
    return expected, overrides


def _where(file: str) -> str:
    if file.startswith("<override"):
        return file
    return str(Path(file).resolve().relative_to(BROKEN.resolve()))


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_broken_spec_reports_exactly_what_it_expects(path: Path) -> None:
    expected, overrides = _expectations(path)
    assert any(e[0] == "error" for e in expected) or path.stem == "unused_node", "no expectations"
    spec, diags = check_spec(path, overrides)
    errors = [(_where(d.loc.file), d.loc.line, d.loc.col, d.message) for d in diags.errors]
    for severity, where, row, col, gist in expected:
        pool = (
            errors
            if severity == "error"
            else [(_where(d.loc.file), d.loc.line, d.loc.col, d.message) for d in diags.warnings]
        )
        hits = [e for e in pool if e[:3] == (where, row, col) and gist in e[3]]
        assert hits, f"expected {severity} at {where}:{row}:{col} containing {gist!r}; got {pool}"
    want_errors = [e for e in expected if e[0] == "error"]
    assert len(errors) == len(want_errors), f"unexpected extra errors: {errors}"
    assert (spec is None) == bool(want_errors)
