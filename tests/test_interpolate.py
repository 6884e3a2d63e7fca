"""``interpolate``: (1 − α)·A + α·B per tensor, exact at the ends, refused when the
models differ (the differences named)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch

import cli
from engine.apply.interpolate import interpolate, save
from engine.apply.source import ApplyError
from engine.compile.weights import read_state_dict

ROOT = Path(__file__).resolve().parents[1]


def model(seed: int, **extra: torch.Tensor) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {
        "conv.weight": torch.randn(4, 3, 3, 3, generator=gen),
        "conv.bias": torch.randn(4, generator=gen),
        "norm.num_batches_tracked": torch.tensor(seed * 100, dtype=torch.long),
        "half.weight": torch.randn(5, generator=gen).half(),
    }
    state.update(extra)
    return state


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a.safetensors", tmp_path / "b.pth"
    safetensors.torch.save_file(model(1), a)
    torch.save(model(2), b)
    return a, b


def test_alpha_zero_and_one_give_a_and_b_exactly(files: tuple[Path, Path]) -> None:
    a, b = files
    for alpha, want in ((0.0, model(1)), (1.0, model(2))):
        got = interpolate([a, b], alpha=alpha).state
        assert set(got) == set(want)
        for key, value in want.items():
            if key.startswith("norm"):
                continue
            assert got[key].dtype == value.dtype and torch.equal(got[key], value), key


def test_blend_per_tensor_with_integer_buffers_from_a(files: tuple[Path, Path]) -> None:
    a, b = files
    got = interpolate([a, b], alpha=0.3).state
    want = 0.7 * model(1)["conv.weight"].double() + 0.3 * model(2)["conv.weight"].double()
    torch.testing.assert_close(got["conv.weight"], want.float(), atol=0, rtol=0)
    assert got["norm.num_batches_tracked"].item() == 100  # A's, not blended
    assert got["half.weight"].dtype == torch.float16


def test_several_models_with_weights_summing_to_one(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = files
    c = tmp_path / "c.pth"
    torch.save(model(3), c)
    got = interpolate([a, b, c], weights=[0.5, 0.25, 0.25]).state
    parts = [model(s)["conv.bias"].double() for s in (1, 2, 3)]
    want = 0.5 * parts[0] + 0.25 * parts[1] + 0.25 * parts[2]
    torch.testing.assert_close(got["conv.bias"], want.float())
    with pytest.raises(ApplyError, match=r"sum to 0\.9, not 1"):
        interpolate([a, b, c], weights=[0.5, 0.2, 0.2])
    with pytest.raises(ApplyError, match="for 3, give --weights"):
        interpolate([a, b, c], alpha=0.5)
    with pytest.raises(ApplyError, match="outside 0"):
        interpolate([a, b], alpha=1.5)


def test_models_that_differ_are_refused_with_the_differences_named(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, _ = files
    other = model(2, **{"extra.weight": torch.zeros(2)})
    other["conv.weight"] = torch.zeros(8, 3, 3, 3)
    del other["conv.bias"]
    c = tmp_path / "c.pth"
    torch.save(other, c)
    with pytest.raises(ApplyError) as info:
        interpolate([a, c], alpha=0.5)
    text = str(info.value)
    assert "not in" in text and "conv.bias" in text and "extra.weight" in text
    assert "conv.weight (4, 3, 3, 3) vs (8, 3, 3, 3)" in text
    out = tmp_path / "x.pth"
    code = cli.main(["interpolate", str(a), str(c), "--alpha", "0.5", "--out", str(out)])
    assert code == cli.EXIT_INVALID and not out.exists()
    assert "conv.bias" in capsys.readouterr().err


def test_cli_writes_a_loadable_file_from_run_folders(tmp_path: Path) -> None:
    runs = []
    for seed in (1, 2):
        run = tmp_path / f"run{seed}"
        (run / "models").mkdir(parents=True)
        shutil.copy(ROOT / "specs" / "quickstart.yaml", run / "spec.resolved.yaml")
        safetensors.torch.save_file(model(seed), run / "models" / "G_iter_00000010.safetensors")
        runs.append(str(run))
    out = tmp_path / "blend.safetensors"
    assert cli.main(["interpolate", *runs, "--alpha", "1", "--out", str(out)]) == 0
    blended = read_state_dict(out)
    assert torch.equal(blended["conv.weight"], model(2)["conv.weight"])
    save_to = tmp_path / "blend.onnx"
    with pytest.raises(ApplyError, match=r"write \.safetensors or \.pth"):
        save(interpolate(runs, alpha=0.5), save_to)
