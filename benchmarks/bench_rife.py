"""One RIFE training iteration through Loom's runtime against hand-written loops, in
one process, interleaved. Prints median time ratios (target ≤ 1.05).

Three contenders take the same triplet batch each round:

* ``loom`` — ``Trainer.iteration`` of ``specs/rife.yaml`` (IFNet with its teacher,
  context net and U-Net; the Laplacian-pyramid L1 of student and teacher plus 0.01 ×
  the flow distillation of three levels; AdamW): the step program, the optimizer step
  and the scheduler, as training runs it;
* ``hand`` — a plain loop (forward, the same losses written by hand, backward, AdamW
  step) over a copy of the same compiled network: what Loom's runtime adds around it.
  Its AdamW has the spec's settings and ``foreach`` kernels, as Loom's optimizers have;
* ``module`` — the same plain loop over ``RefIFNet`` (tests/test_rife.py: IFNet written
  by hand in plain PyTorch with the ECCV 2022 code's module names) holding the compiled
  network's weights (outputs checked equal first): what the whole of Loom costs against
  plain PyTorch.

``--clock cpu`` times each contender by the CPU time of the process instead of the
wall clock, for a machine shared with other jobs; use it with ``--threads 1``.

Run: python benchmarks/bench_rife.py [--crop 64] [--batch 2] [--repeats 7] [--threads 1]
                                     [--clock wall|cpu] [--widths 240,150,90,90,16]
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable

import torch
from _runtime import prepared_run, race_against_hand_loops
from torch import nn

# The reference IFNet and LapLoss written by hand live with the tests (the project root
# is on sys.path once _runtime is imported).
from tests.test_rife import RefIFNet, _lap_reference

WIDTH_KEYS = ("c0", "c1", "c2", "c_tea", "c_ctx")
DISTILL = 0.01


def distill(
    flow: torch.Tensor, merged: torch.Tensor, out: dict[str, torch.Tensor], gt: torch.Tensor
) -> torch.Tensor:
    """RIFE's distillation of one level, as its IFNet.forward computes it."""
    with torch.no_grad():
        worse = (merged - gt).abs().mean(1, True) > (out["merged_tea"] - gt).abs().mean(
            1, True
        ) + 0.01
    gap = ((out["flow_tea"].detach() - flow) ** 2).mean(1, True).clamp_min(1e-12) ** 0.5
    return (gap * worse.float()).mean()


def plain_loop(
    net: nn.Module, f0: torch.Tensor, f1: torch.Tensor, mid: torch.Tensor
) -> Callable[[], None]:
    """Forward, RIFE's losses, backward, AdamW step: the recipe written as a user would,
    with the optimizer Loom builds from the spec (``foreach`` kernels, as Loom's
    default: on the CPU torch's own default is a loop over the tensors)."""
    opt = torch.optim.AdamW(net.parameters(), lr=3e-4, weight_decay=1e-3, foreach=True)

    def step() -> None:
        out = net(img0=f0, img1=f1, gt=mid)
        loss = _lap_reference(out["out"], mid, 5) + _lap_reference(out["merged_tea"], mid, 5)
        for i in range(3):
            loss = loss + DISTILL * distill(out[f"flow{i}"], out[f"merged{i}"], out, mid)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--widths", default="240,150,90,90,16", help="c0,c1,c2,c_tea,c_ctx")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    widths = dict(zip(WIDTH_KEYS, (int(w) for w in args.widths.split(",")), strict=True))
    overrides = [
        f"data.train.crop_size={args.crop}",
        f"data.train.batch_size={args.batch}",
        *(f"networks.flownet.params.{k}={v}" for k, v in widths.items()),
    ]
    run = prepared_run("rife.yaml", overrides, phase=0)
    f0, f1, mid = (torch.rand(args.batch, 3, args.crop, args.crop) for _ in range(3))
    batch = {"f0": f0, "f1": f1, "mid": mid}

    compiled = run.networks["flownet"]
    plain = RefIFNet(**widths)
    plain.load_state_dict(compiled.state_dict())  # same names: nothing is renamed
    with torch.no_grad():
        difference = float(
            (plain(f0, f1, mid)["out"] - compiled(img0=f0, img1=f1, gt=mid)["out"]).abs().max()
        )
    iteration = [1]

    def loom() -> None:
        run.iteration(iteration[0], run.phase, batch)
        iteration[0] += 1

    class Keyword(nn.Module):
        """The plain module called with keywords, as the compiled one is."""

        def __init__(self) -> None:
            super().__init__()
            self.net = plain

        def forward(
            self, img0: torch.Tensor, img1: torch.Tensor, gt: torch.Tensor
        ) -> dict[str, torch.Tensor]:
            return self.net(img0, img1, gt)

    contenders = {
        "loom": loom,
        "hand": plain_loop(copy.deepcopy(compiled), f0, f1, mid),
        "module": plain_loop(Keyword(), f0, f1, mid),
    }
    params = sum(p.numel() for p in compiled.parameters())
    race_against_hand_loops(
        (
            f"RIFE iteration (IFNet {args.widths}, {params:,} parameters; LapLoss ×2 + 0.01 × "
            f"distillation, AdamW), CPU, {args.threads} threads, batch {args.batch}, crop "
            f"{args.crop}, {args.repeats} interleaved rounds, {args.clock} clock"
        ),
        contenders,
        repeats=args.repeats,
        clock=args.clock,
        difference=difference,
    )


if __name__ == "__main__":
    main()
