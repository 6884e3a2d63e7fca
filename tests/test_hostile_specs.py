"""Specs from strangers: validate answers every one quickly, with a located error.

Each case is built here: alias bombs, deep nesting, huge strings and keys, merge keys,
expressions whose values explode. ``validate`` must finish in a few seconds with exit
code 0 or 2 and never a traceback.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from engine.load import check_spec
from engine.spec.diagnostics import did_you_mean
from engine.spec.expr import ExprError, evaluate

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = (ROOT / "specs" / "quickstart.yaml").read_text(encoding="utf-8")


def _bomb(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "params:\n" + "".join(f"  {line}\n" for line in lines)


CASES = {
    "alias_bomb": (
        QUICKSTART.replace("scale: 2\n", "scale: 2\n" + _bomb(9)),
        "more than 200000 values once aliases are expanded",
    ),
    "deep_flow_nesting": (QUICKSTART + "extra: " + "[" * 3000 + "]" * 3000 + "\n", "nested too"),
    "deep_block_nesting": (
        QUICKSTART + "".join(f"{'  ' * i}k{i}:\n" for i in range(80)) + "  " * 80 + "v: 1\n",
        "nested too deeply",
    ),
    "huge_string": (
        QUICKSTART.replace("name: quickstart", "name: quickstart\nnmae: " + "x" * 200_000),
        "a string of 200000 characters",
    ),
    "huge_key": (QUICKSTART + "k" * 1000 + ": 1\n", "a key of 1000 characters"),
    "huge_file": (QUICKSTART + "#" * (3 * 2**20) + "\n", "too large for a spec"),
    "power_tower": (
        QUICKSTART.replace("params: {nf: 32}", "params: {nf: '$(((10 ** 64) ** 64) ** 64) ** 64'}"),
        "a power of more than 256 bits",
    ),
    "string_times_huge": (
        QUICKSTART.replace("params: {nf: 32}", "params: {nf: \"$'a' * 10 ** 10\"}"),
        "a result of length 10000000000",
    ),
    "list_times_huge": (
        QUICKSTART.replace("params: {nf: 32}", "params: {nf: '$[0] * 10 ** 9'}"),
        "a result of length 1000000000",
    ),
    "long_sum": (
        QUICKSTART.replace(
            "params: {nf: 32}", "params: {nf: '$" + " + ".join(["1"] * 10000) + "'}"
        ),
        "is too long",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_hostile_spec_is_refused_quickly_at_its_place(name: str, tmp_path: Path) -> None:
    text, gist = CASES[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    started = time.perf_counter()
    spec, diags = check_spec(path)
    assert time.perf_counter() - started < 10
    assert spec is None
    messages = [str(d) for d in diags.errors]
    assert any(gist in m for m in messages), messages
    assert all(m.startswith(str(path)) for m in messages)
    assert all(len(m) < 2000 for m in messages)  # nothing echoes a huge value


def test_merge_keys_work_with_their_yaml_meaning(tmp_path: Path) -> None:
    text = QUICKSTART.replace(
        "logging: {every: 50}",
        "validation: &v {every: 400, output: fake.sr, input: data.lr, target: data.hr}\n"
        "logging:\n  <<: {every: 25}\n",
    ).replace(
        "validation: {every: 400, output: fake.sr, input: data.lr, target: data.hr, "
        "metrics: [psnr, ssim], samples: 2}\n",
        "",
    )
    path = tmp_path / "merge.yaml"
    path.write_text(text, encoding="utf-8")
    spec, diags = check_spec(path)
    assert spec is not None, [str(d) for d in diags.errors]
    assert spec.settings.logging.every == 25


def test_the_command_line_never_prints_a_traceback(tmp_path: Path) -> None:
    text, _ = CASES["alias_bomb"]
    path = tmp_path / "bomb.yaml"
    path.write_text(text, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{path}:" in done.stderr


def test_expressions_keep_their_ordinary_uses() -> None:
    assert evaluate("$2 ** 10", {}) == 1024
    assert evaluate("$[1, 2] * 3", {}) == [1, 2, 1, 2, 1, 2]
    assert evaluate("$nf * $scale ** 2", {"nf": 64, "scale": 4}) == 1024
    with pytest.raises(ExprError, match="too large"):
        evaluate("$(2 ** 60) * (2 ** 60) * (2 ** 60) * (2 ** 60) * (2 ** 60)", {})


def test_did_you_mean_offers_ties_and_skips_huge_names() -> None:
    assert did_you_mean("ad", ["add", "pad", "pool"]) == " (did you mean 'add' or 'pad'?)"
    assert did_you_mean("l2", ["l1", "mse", "ssim"]) == " (did you mean 'l1'?)"
    assert did_you_mean("los", ["loss", "call", "op"]) == " (did you mean 'loss'?)"
    started = time.perf_counter()
    assert did_you_mean("x" * 10**7, ["x" * 10**7, "conv"]) == ""
    assert time.perf_counter() - started < 5  # a bound on hangs, not a speed test


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "reference",
    ["extends: /etc/passwd", "extends: ../../../outside.yaml", "imports: [/etc/hosts]"],
)
def test_a_spec_cannot_read_files_outside_its_project(reference: str, tmp_path: Path) -> None:
    _write(tmp_path / "outside.yaml", "secret: do-not-print-me\n")
    project = tmp_path / "a" / "repo"
    (project / ".git").mkdir(parents=True)
    spec = _write(project / "specs" / "s.yaml", f"{reference}\nspec: 1\nname: s\n")
    _, diags = check_spec(spec)
    messages = [str(d) for d in diags.errors]
    assert any("is outside the spec's project" in m and ":1:" in m for m in messages), messages
    assert not any("do-not-print-me" in m or "root:" in m for m in messages)


def test_a_spec_may_extend_anything_inside_its_repository_or_an_allowed_folder(
    tmp_path: Path,
) -> None:
    project = tmp_path / "repo"
    (project / ".git").mkdir(parents=True)
    base = (ROOT / "specs" / "quickstart.yaml").read_text(encoding="utf-8")
    _write(project / "specs" / "base.yaml", base)
    child = _write(project / "experiments" / "a.yaml", "extends: ../specs/base.yaml\n")
    spec, diags = check_spec(child)
    assert spec is not None, [str(d) for d in diags.errors]
    shared = _write(tmp_path / "shared" / "base.yaml", base)
    outer = _write(project / "b.yaml", f"extends: {shared}\n")
    assert check_spec(outer)[0] is None
    assert check_spec(outer, allow=[tmp_path / "shared"])[0] is not None
    _write(project / "loom.toml", '[paths]\nallow = ["../shared"]\n')
    assert check_spec(outer)[0] is not None


def test_a_file_named_many_times_is_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.spec import resolve

    base = _write(tmp_path / "base.yaml", QUICKSTART)
    many = _write(tmp_path / "many.yaml", "extends: [" + ", ".join([str(base)] * 500) + "]\n")
    reads: list[Path] = []
    real = resolve.load_yaml

    def counted(path: Path, *args: Any, **kwargs: Any) -> Any:
        reads.append(Path(path).resolve())
        return real(path, *args, **kwargs)

    monkeypatch.setattr(resolve, "load_yaml", counted)
    spec, diags = check_spec(many)
    assert spec is not None, [str(d) for d in diags.errors]
    assert reads.count(base.resolve()) == 1


def test_strict_validation_keeps_data_and_weights_inside_the_project(tmp_path: Path) -> None:
    project = tmp_path / "repo"
    (project / ".git").mkdir(parents=True)
    (project / "photos").mkdir()
    text = QUICKSTART.replace('hr: "builtin:photos", crop_size: 96', "hr: photos, crop_size: 96")
    inside = _write(project / "q.yaml", text)
    assert check_spec(inside, strict=True)[0] is not None
    for value, gist in (("/etc", "is an absolute path"), ("../../x", "is outside")):
        spec = _write(project / "bad.yaml", text.replace("hr: photos,", f"hr: {value},"))
        assert check_spec(spec)[0] is not None  # without --strict: allowed (run reads them)
        _, diags = check_spec(spec, strict=True)
        assert any(gist in str(d) and ":45:" in str(d) for d in diags.errors), diags.errors


# ------------------------------------------- crashes the random-YAML fuzz found (test_fuzz)

LONG = "x" * 300  # a path component longer than file systems allow (ENAMETOOLONG)
FUZZ_FOUND = {
    "infinite_iterations": (
        QUICKSTART.replace("iterations: 1200", "iterations: .inf"),
        2,
        "'train.iterations' must be an integer",
    ),
    "zero_scale": (QUICKSTART.replace("scale: 2\n", "scale: 0\n"), 2, "'scale' must be an integer"),
    "mapping_as_key": (QUICKSTART + "extra: {a: 1, {b: [1]}: 2}\n", 2, "keys must be plain names"),
    "unknown_tag_then_an_error": (
        "[!custom value, !!binary R0lGODlhDAAMAIQAAP]\n",
        2,
        "failed to decode base64",
    ),
    "long_folder_name": (
        QUICKSTART.replace('hr: "builtin:photos", crop_size', f"hr: {LONG}, crop_size"),
        0,
        "does not exist",
    ),
    "no_such_user": (
        QUICKSTART.replace('hr: "builtin:photos", crop_size', "hr: ~no_such_user_q/x, crop_size"),
        0,
        "does not exist",
    ),
    "channels_not_a_number": (  # found by the mutation fuzz (tests/test_robustness.py)
        QUICKSTART.replace("inputs: {lr: 3}", "inputs: {lr: x}"),
        2,
        "must be an integer",
    ),
    "long_extends": (f"extends: {LONG}.yaml\n" + QUICKSTART, 2, "not found"),
    "long_pretrained": (
        QUICKSTART.replace(
            "outputs: {sr: sr}\n", f"outputs: {{sr: sr}}\n    pretrained: {{path: {LONG}}}\n"
        ),
        2,
        "pretrained weights file",
    ),
}


def test_documents_the_fuzz_found_get_diagnostics(tmp_path: Path) -> None:
    import contextlib
    import gc
    import io

    import cli

    for name, (text, code, gist) in FUZZ_FOUND.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            assert cli.main(["validate", str(path)]) == code, name
            if name == "unknown_tag_then_an_error":
                gc.collect()  # what Python prints collecting a half-built value lands here
        printed = out.getvalue()
        assert gist in printed and f"{path}:" in printed, printed
        assert "Traceback" not in printed and "Exception ignored" not in printed, printed


# ------------------------------------------------- networks bigger than any machine

HUGE_CONV = QUICKSTART.replace(
    "head:  {block: conv, in: lr, out: $nf, act: lrelu}",
    "head:  {block: conv, in: lr, out: 1000000000, act: lrelu}",
)


def _cli(*args: str) -> tuple[int, str]:
    import contextlib
    import io

    import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = cli.main(list(args))
    return code, out.getvalue()


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (
        1 if sys.platform == "darwin" else 1024
    )


def test_a_network_bigger_than_any_device_is_refused_by_validate_and_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text(HUGE_CONV, encoding="utf-8")
    before = _peak_rss()
    for command in (["validate", str(path)], ["run", str(path), "--out", str(tmp_path / "a")]):
        code, printed = _cli(*command)
        assert code == 2 and "Traceback" not in printed, printed
        # 1e9 x 3 x 3 x 3 weights in head, then 32 x 1e9 x 3 x 3 in body.0, at its line
        assert f"{path}:17:" in printed and "at least 315.00G parameters" in printed, printed
        assert (
            "node 'body.0' (conv) alone has at least 288.00G (it reads 1.00G channels)" in printed
        )
        assert "LOOM_MAX_PARAMETERS" in printed
    # Past the ceiling, run's own check: inspect's figures against this machine's memory.
    monkeypatch.setenv("LOOM_MAX_PARAMETERS", "1e13")
    assert check_spec(path)[0] is not None
    code, printed = _cli("run", str(path), "--out", str(tmp_path / "b"))
    assert code == 2 and "Traceback" not in printed, printed
    assert "do not fit in memory: training needs about" in printed, printed
    assert "an estimate from inspect's figures at batch 8" in printed
    assert f"{path}:16:" in printed and "node 'head' (conv)" in printed, printed
    assert not (tmp_path / "b" / "checkpoints").exists()
    assert _peak_rss() - before < 2 * 2**30  # torch imported, nothing allocated (TBs)
    monkeypatch.delenv("LOOM_MAX_PARAMETERS")
    tensor = tmp_path / "tensor.yaml"  # a tensor node's shape counts too
    big = "      big: {block: parameter, shape: [1000000, 1000000]}\n"
    tensor.write_text(
        QUICKSTART.replace("    outputs: {sr: sr}\n", big + "    outputs: {sr: sr}\n")
    )
    _, diags = check_spec(tensor)
    assert any("node 'big' (parameter) alone has at least 1.00T" in str(d) for d in diags.errors)
    monkeypatch.setenv("LOOM_MAX_PARAMETERS", "many")
    _, diags = check_spec(path)
    assert any(
        "LOOM_MAX_PARAMETERS='many' is not a positive number" in str(d) for d in diags.errors
    )


def test_the_memory_estimate_is_inspects_figures_against_the_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    from engine.compile import budget, memory
    from engine.compile.inspect import inspect_spec
    from engine.load import load_spec
    from engine.spec.diagnostics import SpecError

    spec = load_spec(ROOT / "specs" / "quickstart.yaml")
    (part,) = memory.estimate(spec)
    (report,) = inspect_spec(spec, probe_sizes=False)
    assert part.params == report.params and part.activations == report.memory
    assert part.bytes_per_param == 16  # weights, gradients, Adam's two moments
    cpu = torch.device("cpu")
    free = budget.available_memory(cpu)
    assert free is not None and free[0] > part.total  # this machine runs the quick start
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (5 * 10**9, 8 * 10**10))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a GPU")
    cuda = budget.available_memory(torch.device("cuda", 0))
    assert cuda == (5 * 10**9, "free on a GPU (cuda:0)")  # what CUDA says is free, not RAM
    monkeypatch.setattr(budget, "available_memory", lambda device: (part.total, "free"))
    memory.check_memory(spec, cpu)  # fits exactly once...
    with pytest.raises(SpecError, match=r"2 processes.*more than the .* free") as refused:
        memory.check_memory(spec, cpu, processes=2)  # ...but not twice
    (diag,) = refused.value.diagnostics.errors
    assert diag.loc is not None and diag.loc.line > 0
    assert "(LOOM_MEMORY_CHECK=0 starts it anyway)" in diag.message
    monkeypatch.setenv("LOOM_MEMORY_CHECK", "0")
    memory.check_memory(spec, cpu, processes=2)
