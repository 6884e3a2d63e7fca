"""The docs' examples are real: every YAML snippet parses, every example validates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.graph.training import gradient_networks
from engine.load import check_spec
from engine.spec.diagnostics import Diagnostics
from engine.spec.yamlio import parse_yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
BLOCK = re.compile(r"```yaml\n(.*?)```", re.S)


def snippets() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for i, match in enumerate(BLOCK.finditer(doc.read_text(encoding="utf-8"))):
            found.append((f"{doc.name}#{i}", match.group(1)))
    return found


SNIPPETS = snippets()
EXAMPLES = [(name, text) for name, text in SNIPPETS if text.startswith("# example:")]


def test_the_language_reference_has_the_worked_examples() -> None:
    names = {text.splitlines()[0].split(":", 1)[1].strip() for _, text in EXAMPLES}
    assert {"tiny_sr", "cyclegan", "wbc", "tiny_flow"} <= names


@pytest.mark.parametrize(("name", "text"), SNIPPETS, ids=[n for n, _ in SNIPPETS])
def test_every_yaml_snippet_parses(name: str, text: str) -> None:
    diags = Diagnostics()
    assert parse_yaml(text, name, diags) is not None, [str(d) for d in diags]


@pytest.mark.parametrize(("name", "text"), EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_every_example_spec_validates(name: str, text: str, tmp_path: Path) -> None:
    path = tmp_path / "example.yaml"
    path.write_text(text, encoding="utf-8")
    spec, diags = check_spec(path)
    assert spec is not None, "\n".join(str(d) for d in diags)
    assert not diags.warnings, "\n".join(str(d) for d in diags.warnings)


def _example(name: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    [text] = [t for _, t in EXAMPLES if t.startswith(f"# example: {name}\n")]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    spec, diags = check_spec(path)
    assert spec is not None, [str(d) for d in diags]
    return spec


def test_cyclegan_example_has_four_networks_pools_cycles_and_identities(tmp_path: Path) -> None:
    spec = _example("cyclegan", tmp_path)
    assert set(spec.networks) == {"G_A", "G_B", "D_A", "D_B"}
    g = spec.training.graph
    ops = {a["target"] for _, a in g.nodes(data=True) if a["kind"] == "op"}
    assert ops == {"image_pool"}
    assert {"cycle_A", "cycle_B", "identity_A", "identity_B"} <= set(spec.training.losses())
    # The discriminators learn from pooled (detached) fakes: no gradient reaches G_A.
    reach = gradient_networks(spec.training, spec.networks)
    assert reach["d_A"] == {"D_A"}
    assert reach["cycle_A"] == {"G_A", "G_B"}


def test_wbc_example_has_representations_and_a_gradient_free_superpixel_target(
    tmp_path: Path,
) -> None:
    spec = _example("wbc", tmp_path)
    reach = gradient_networks(spec.training, spec.networks)
    assert reach["superpixels"] == set()
    assert reach["structure_l"] == {"G"}  # through the output, not through the target
    assert reach["surface_d"] == {"D_surface"}
    weights = spec.data["train"]["phases"][1]["steps"][1]["minimize"]
    assert weights["surface_g"] == pytest.approx(0.2 * 0.02)  # $surface * $gan_weight


def test_writing_blocks_example_compiles_and_learns(tmp_path: Path) -> None:
    import torch

    import engine

    spec = _example("rcan_lite", tmp_path)
    g = engine.build(spec)["G"]
    assert {"groups.1.blocks.0.ca.conv_du.0.weight", "groups.1.blocks.1.conv2.weight"} <= set(
        g.state_dict()
    )
    torch.manual_seed(0)
    hr = torch.rand(4, 3, 32, 32)
    lr = torch.nn.functional.avg_pool2d(hr, 2)
    opt = torch.optim.Adam(g.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.l1_loss(g(lr), hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_flow_example_inverts_and_names_its_items_and_copies(tmp_path: Path) -> None:
    """The spec-language reference's flow: side inputs, `as:`, copies by number, a
    reverse call that inverts the forward call and samples at the LR image's size."""
    import torch

    import engine

    spec = _example("tiny_flow", tmp_path)
    g = spec.training.graph
    assert g.nodes["flow"]["outputs"] == ["z", "z1", "logdet"]
    assert g.nodes["sample"]["inputs"] == ("lr", "z", "z1") and g.nodes["sample"]["outputs"] == [
        "hr"
    ]
    net = engine.build(spec)["G"]
    keys = set(net.state_dict())
    assert {"enc.2.weight", "steps.3.fAffine.0.weight", "steps.4.conv.weight"} <= keys
    assert {"top.0.fAffine.0.weight", "top.1.fAffine.0.weight"} <= keys
    torch.manual_seed(0)
    hr = torch.rand(2, 3, 32, 32)
    lr = torch.nn.functional.avg_pool2d(hr, 2)
    net.train()
    with torch.no_grad():
        net(hr=hr, lr=lr)  # the actnorms initialize on a first batch
        net.eval()
        out = net(hr=hr, lr=lr)
        assert out["z"].shape == out["z1"].shape == (2, 6, 16, 16) and out["logdet"].shape == (2,)
        back = net(lr=lr, z=out["z"], z1=out["z1"], reverse=True)["hr"]
        assert (back - hr).abs().max().item() <= 1e-4
        drawn = [net(lr=lr, reverse=True, heat=0.0)["hr"] for _ in range(2)]
        assert drawn[0].shape == hr.shape and torch.equal(drawn[0], drawn[1])
