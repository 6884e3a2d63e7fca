"""The command line, run as a user runs it: exit codes, output, help."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
LIBS = sorted((ROOT / "specs" / "lib").glob("*.yaml"))
BROKEN = ROOT / "tests" / "broken"


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def installed_loom() -> str | None:
    """The `loom` console script of this interpreter's environment, else the one on PATH."""
    return shutil.which("loom", path=str(Path(sys.executable).parent)) or shutil.which("loom")


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["validate", "specs/quickstart.yaml"], 0),
        (["validate", "tests/broken/unknown_train_key.yaml"], 2),
        (["validate", "specs/quickstart.yaml", "train.itrations=5"], 2),
        (["validate", "specs/quickstart.yaml", "--bogus"], 2),
    ],
    ids=["valid", "invalid", "bad-override", "bad-option"],
)
def test_the_loom_console_script_is_python_cli_py(args: list[str], code: int) -> None:
    loom = installed_loom()
    if loom is None:
        pytest.skip("the loom console script is not installed: pip install -e .")
    script = subprocess.run([loom, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    module = cli(*args)
    assert module.returncode == code, module.stderr
    # The same output, except that usage lines name the command as it was typed.
    assert (script.returncode, script.stdout, script.stderr) == (
        module.returncode,
        module.stdout,
        module.stderr.replace("python cli.py", "loom"),
    )


@pytest.mark.parametrize("path", SPECS + LIBS, ids=lambda p: p.name)
def test_every_shipped_spec_and_library_validates(path: Path) -> None:
    result = cli("validate", str(path))
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stdout + result.stderr


@pytest.mark.parametrize("path", SPECS + LIBS, ids=lambda p: p.name)
def test_every_shipped_yaml_names_its_schema_for_editors(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    schema = (path.parent / first.split("=", 1)[1]).resolve()
    assert schema == ROOT / "schemas" / "spec.schema.json"


def test_validate_from_another_directory_finds_libraries(tmp_path: Path) -> None:
    result = cli("validate", str(ROOT / "specs" / "esrgan.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_validate_reports_errors_gcc_style_and_exits_2() -> None:
    result = cli("validate", str(BROKEN / "unknown_train_key.yaml"))
    assert result.returncode == 2
    expected = "unknown key 'itrations' in 'train' (did you mean 'iterations'?)"
    assert f"unknown_train_key.yaml:3:3: error: {expected}" in result.stderr


def test_a_library_file_is_checked_on_its_own() -> None:
    result = cli("validate", str(BROKEN / "lib" / "bad_lib.yaml"))
    assert result.returncode == 2
    assert "bad_lib.yaml:6:40: error: unknown parameter 'kernal' for block 'conv'" in result.stderr


def test_validate_several_specs_fails_if_any_fails() -> None:
    result = cli("validate", str(ROOT / "specs" / "esrgan.yaml"), str(BROKEN / "repeat_zero.yaml"))
    assert result.returncode == 2
    assert "esrgan.yaml: valid" in result.stdout


def test_validate_json_is_machine_readable() -> None:
    result = cli("validate", "--json", str(BROKEN / "unknown_block.yaml"))
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert report["valid"] is False
    [diag] = [d for d in report["diagnostics"] if d["severity"] == "error"]
    assert (diag["line"], diag["col"]) == (5, 21)
    assert diag["file"].endswith("unknown_block.yaml")
    assert "did you mean 'conv'" in diag["message"]


def test_validate_applies_overrides() -> None:
    ok = cli("validate", str(ROOT / "specs" / "esrgan.yaml"), "train.iterations=1000")
    assert ok.returncode == 0
    bad = cli("validate", str(ROOT / "specs" / "esrgan.yaml"), "train.iteration=1000")
    assert bad.returncode == 2
    assert "<override train.iteration=1000>:1:7" in bad.stderr


def test_misspelling_a_key_in_a_shipped_spec_names_the_place(tmp_path: Path) -> None:
    text = (ROOT / "specs" / "esrgan.yaml").read_text(encoding="utf-8")
    lines = text.splitlines()
    row = next(i for i, line in enumerate(lines) if "fake_d:" in line)
    lines[row] = lines[row].replace("in: fake}", "in: fkae}")
    (tmp_path / "esrgan.yaml").write_text("\n".join(lines), encoding="utf-8")
    result = cli("validate", str(tmp_path / "esrgan.yaml"))
    assert result.returncode == 2
    col = lines[row].index("fkae") + 1
    assert (
        f"esrgan.yaml:{row + 1}:{col}: error: unknown reference 'fkae' (did you mean 'fake'?)"
        in result.stderr
    )


def test_graph_tree_dot_and_mermaid() -> None:
    esrgan = str(ROOT / "specs" / "esrgan.yaml")
    tree = cli("graph", esrgan, "--net", "G")
    assert tree.returncode == 0
    assert "conv_first: conv(out=64)" in tree.stdout
    assert (
        "conv2: conv(out=32, act=lrelu, slope=0.2)  ← cat(conv_first, body.0.rdb1.conv1)"
        in tree.stdout
    )
    dot = cli("graph", esrgan, "--net", "D", "--format", "dot")
    assert dot.stdout.startswith('digraph "D" {')
    assert '"conv0_0" -> "conv0_1";' in dot.stdout
    mermaid = cli("graph", esrgan, "--format", "mermaid")
    assert mermaid.stdout.startswith("flowchart LR")
    assert "n_fake --> n_pix" in mermaid.stdout
    training = cli("graph", esrgan)
    assert "d_loss: loss gan(" in training.stdout


def test_graph_unknown_network_suggests_a_name() -> None:
    result = cli("graph", str(ROOT / "specs" / "esrgan.yaml"), "--net", "g")
    assert result.returncode == 2
    assert "no network 'g' (did you mean 'G'?)" in result.stderr


@pytest.mark.parametrize("command", ["validate", "graph", "schema"])
def test_every_command_has_help_with_examples(command: str) -> None:
    result = cli(command, "--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout
    assert "python cli.py " + command in result.stdout


def test_committed_schemas_are_fresh() -> None:
    from engine.spec import schema_files

    assert schema_files.stale() == [], "run: python cli.py schema"


def test_editor_schema_dispatches_builtin_blocks() -> None:
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    folder = ROOT / "schemas"
    resources = [
        (f"blocks/{p.name}", Resource.from_contents(json.loads(p.read_text())))
        for p in (folder / "blocks").glob("*.json")
    ]
    spec_schema = json.loads((folder / "spec.schema.json").read_text())
    registry = Registry().with_resources(resources)
    validator = Draft202012Validator(spec_schema, registry=registry)
    node = {
        "spec": 1,
        "name": "x",
        "networks": {
            "G": {
                "inputs": {"x": 3},
                "nodes": {"c": {"block": "conv", "in": "x", "out": 8, "kernal": 3}},
            }
        },
    }
    messages = [e.message for e in validator.iter_errors(node)]
    assert any("kernal" in m for m in messages)
    node["networks"]["G"]["nodes"]["c"].pop("kernal")
    assert list(validator.iter_errors(node)) == []


def test_overrides_may_follow_options() -> None:
    before = cli("inspect", "specs/quickstart.yaml", "data.train.crop_size=64", "--no-probe")
    after = cli("inspect", "specs/quickstart.yaml", "--no-probe", "data.train.crop_size=64")
    assert before.returncode == after.returncode == 0, after.stderr
    assert before.stdout == after.stdout and "(8, 3, 32, 32)" in after.stdout
    wrong = cli("inspect", "specs/quickstart.yaml", "--no-probe", "--bogus")
    assert wrong.returncode == 2 and "unrecognized arguments: --bogus" in wrong.stderr
