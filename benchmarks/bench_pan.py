"""One PAN training iteration (L1, Adam) through Loom's runtime against hand-written
loops, in one process, interleaved. Prints median time ratios (target ≤ 1.05).

Three contenders take the same batch each round:

* ``loom`` — ``Trainer.iteration`` of ``specs/pan.yaml`` (x4, nf 40, unf 24, 16 SC-PA
  blocks): the step program, the optimizer step and the scheduler, as training runs it;
* ``hand`` — a plain loop (forward, L1, backward, Adam step) over a copy of the same
  compiled network: what Loom's runtime adds around the network;
* ``module`` — the same plain loop over ``PlainPAN`` below, PAN written by hand as the
  original repository structures it, holding the compiled network's weights (its
  outputs are checked equal first): what the whole of Loom costs against plain PyTorch.

``--clock cpu`` times each contender by the CPU time of the process instead of the
wall clock: on a machine shared with other jobs (as the 2-core machine of the figures in
benchmarks/README.md was), waiting for a core then counts for nobody. Use it with
``--threads 1``, where no thread spins waiting for another.

Run: python benchmarks/bench_pan.py [--crop 64] [--batch 4] [--repeats 9] [--threads 2]
                                    [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _runtime import prepared_run, race_against_hand_loops
from torch import nn


class PlainPAN(nn.Module):
    """PAN x4 in plain PyTorch, with the original repository's module names."""

    def __init__(self, nf: int = 40, unf: int = 24, nb: int = 16) -> None:
        super().__init__()
        half = nf // 2

        def scpa() -> nn.Module:
            block = nn.Module()
            block.conv1_a = nn.Conv2d(nf, half, 1, bias=False)
            block.conv1_b = nn.Conv2d(nf, half, 1, bias=False)
            block.k1 = nn.Sequential(nn.Conv2d(half, half, 3, padding=1, bias=False))
            block.PAConv = nn.Module()
            block.PAConv.k2 = nn.Conv2d(half, half, 1)
            block.PAConv.k3 = nn.Conv2d(half, half, 3, padding=1, bias=False)
            block.PAConv.k4 = nn.Conv2d(half, half, 3, padding=1, bias=False)
            block.conv3 = nn.Conv2d(nf, nf, 1, bias=False)
            return block

        self.conv_first = nn.Conv2d(3, nf, 3, padding=1)
        self.SCPA_trunk = nn.ModuleList(scpa() for _ in range(nb))
        self.trunk_conv = nn.Conv2d(nf, nf, 3, padding=1)
        self.upconv1 = nn.Conv2d(nf, unf, 3, padding=1)
        self.att1 = nn.Module()
        self.att1.conv = nn.Conv2d(unf, unf, 1)
        self.HRconv1 = nn.Conv2d(unf, unf, 3, padding=1)
        self.upconv2 = nn.Conv2d(unf, unf, 3, padding=1)
        self.att2 = nn.Module()
        self.att2.conv = nn.Conv2d(unf, unf, 1)
        self.HRconv2 = nn.Conv2d(unf, unf, 3, padding=1)
        self.conv_last = nn.Conv2d(unf, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def lrelu(t: torch.Tensor) -> torch.Tensor:
            return F.leaky_relu(t, 0.2)

        fea = self.conv_first(x)
        body = fea
        for b in self.SCPA_trunk:
            a = lrelu(b.k1(lrelu(b.conv1_a(body))))
            g = lrelu(b.conv1_b(body))
            g = lrelu(b.PAConv.k4(b.PAConv.k3(g) * torch.sigmoid(b.PAConv.k2(g))))
            body = b.conv3(torch.cat([a, g], 1)) + body
        fea = fea + self.trunk_conv(body)
        for up, att, hr in (
            (self.upconv1, self.att1, self.HRconv1),
            (self.upconv2, self.att2, self.HRconv2),
        ):
            fea = up(F.interpolate(fea, scale_factor=2, mode="nearest"))
            fea = lrelu(fea * torch.sigmoid(att.conv(fea)))
            fea = lrelu(hr(fea))
        base = F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
        return self.conv_last(fea) + base


def plain_loop(net: nn.Module, lr: torch.Tensor, hr: torch.Tensor) -> Callable[[], None]:
    """Forward, L1, backward, Adam step: PAN's recipe written as a user would."""
    # foreach, as Loom's optimizers (torch's CPU default is a loop over the tensors)
    opt = torch.optim.Adam(net.parameters(), lr=7e-4, betas=(0.9, 0.99), foreach=True)

    def step() -> None:
        loss = F.l1_loss(net(lr), hr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    overrides = [f"data.train.crop_size={args.crop}", f"data.train.batch_size={args.batch}"]
    run = prepared_run("pan.yaml", overrides, phase=0)
    hr = torch.rand(args.batch, 3, args.crop, args.crop)
    lr = F.interpolate(hr, scale_factor=0.25, mode="bicubic", align_corners=False).clamp(0, 1)
    batch = {"lr": lr, "hr": hr}

    compiled = run.networks["G"]
    plain = PlainPAN()
    plain.load_state_dict(compiled.state_dict())  # same names: nothing is renamed
    with torch.no_grad():
        difference = float((plain(lr) - compiled(lr)).abs().max())
    iteration = [1]

    def loom() -> None:
        run.iteration(iteration[0], run.phase, batch)
        iteration[0] += 1

    contenders = {
        "loom": loom,
        "hand": plain_loop(copy.deepcopy(compiled), lr, hr),
        "module": plain_loop(plain, lr, hr),
    }
    race_against_hand_loops(
        (
            f"PAN x4 iteration (nf 40, unf 24, nb 16; L1, Adam), CPU, {args.threads} threads, "
            f"batch {args.batch}, HR crop {args.crop}, {args.repeats} interleaved rounds, "
            f"{args.clock} clock"
        ),
        contenders,
        repeats=args.repeats,
        clock=args.clock,
        difference=difference,
    )


if __name__ == "__main__":
    main()
