"""One PPON training iteration through Loom's runtime against hand-written loops, in
one process, interleaved. Prints median time ratios (target ≤ 1.05).

By default the iteration is one of the perception phase, the busiest of the three: the
D step (relativistic GAN on a detached out_p), then the G step (VGG19 conv5_4 features
+ 5e-3 relativistic GAN) that trains PFEM and PRM only, CFEM, CRM, SFEM and SRM frozen.
``--phase content`` (L1 on out_c) and ``--phase structure`` (multiscale L1 + MS-SSIM on
out_s) time the other two. Three contenders take the same batch each round:

* ``loom`` — ``Trainer.iteration`` of ``specs/ppon.yaml``
  (x4, nf 64, 24 blocks in the trunk, 2 per branch), as training runs it;
* ``hand`` — a plain loop over copies of the same compiled networks and the same loss
  modules, frozen branches with ``requires_grad`` off, the discriminator's parameters
  left out of the generator's backward: what Loom's runtime adds around the networks;
* ``module`` — the same loop over ``PlainPPON`` below, PPON written by hand as the
  original repository structures it, holding the compiled generator's weights (its
  outputs are checked equal first): what the whole of Loom costs against plain PyTorch.

``--clock cpu`` times by the process's CPU time (for a machine shared with other jobs;
use it with ``--threads 1``).

Run: python benchmarks/bench_ppon.py [--phase perception|structure|content] [--crop 64]
                                     [--batch 2] [--repeats 7] [--threads 2]
                                     [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from _runtime import prepared_run, race_against_hand_loops
from torch import nn

PHASES = ("content", "structure", "perception")
BRANCHES = {"content": ("CFEM", "CRM"), "structure": ("SFEM", "SRM")}
BRANCHES["perception"] = ("PFEM", "PRM")
OUTPUT = {"content": 0, "structure": 1, "perception": 2}


# ------------------------------------------------------------- plain PyTorch
class DilatedBlock(nn.Module):
    def __init__(self, nc: int = 64) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(nc, nc, 3, padding=1)
        for rate in range(1, 9):
            self.add_module(f"d{rate}", nn.Conv2d(nc, nc // 2, 3, padding=rate, dilation=rate))
        self.c2 = nn.Conv2d(nc * 4, nc, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.c1(x), 0.2)
        total = self.d1(y)
        sums = [total]
        for rate in range(2, 9):
            total = total + getattr(self, f"d{rate}")(y)
            sums.append(total)
        return x + 0.2 * self.c2(F.leaky_relu(torch.cat(sums, 1), 0.2))


class RRBlock(nn.Module):
    def __init__(self, nc: int = 64) -> None:
        super().__init__()
        self.RB1, self.RB2, self.RB3 = DilatedBlock(nc), DilatedBlock(nc), DilatedBlock(nc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.RB3(self.RB2(self.RB1(x)))


class Trunk(nn.Module):
    def __init__(self, nf: int, nb: int) -> None:
        super().__init__()
        self.sub = nn.Sequential(*(RRBlock(nf) for _ in range(nb)), nn.Conv2d(nf, nf, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sub(x)


def reconstruction(nf: int) -> nn.Sequential:
    """x4: (nearest ×2, conv, LeakyReLU) twice, conv, LeakyReLU, conv — indices 0..8."""
    layers: list[nn.Module] = []
    for _ in range(2):
        layers += [nn.Upsample(scale_factor=2), nn.Conv2d(nf, nf, 3, padding=1), nn.LeakyReLU(0.2)]
    layers += [nn.Conv2d(nf, nf, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(nf, 3, 3, padding=1)]
    return nn.Sequential(*layers)


class PlainPPON(nn.Module):
    """PPON x4 in plain PyTorch, with the original repository's module names."""

    def __init__(self, nf: int = 64, nb: int = 24) -> None:
        super().__init__()
        self.CFEM = nn.Sequential(nn.Conv2d(3, nf, 3, padding=1), Trunk(nf, nb))
        self.SFEM = nn.Sequential(RRBlock(nf), RRBlock(nf))
        self.PFEM = nn.Sequential(RRBlock(nf), RRBlock(nf))
        self.CRM, self.SRM, self.PRM = reconstruction(nf), reconstruction(nf), reconstruction(nf)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        content = self.CFEM(x)
        out_c = self.CRM(content)
        structure = self.SFEM(content)
        out_s = self.SRM(structure) + out_c
        return out_c, out_s, self.PRM(self.PFEM(structure)) + out_s


# ------------------------------------------------------------------- loops
def outputs(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The three outputs in order, from the compiled network (a dict) or the plain one."""
    out = net(x)
    return tuple(out.values()) if isinstance(out, dict) else tuple(out)


def hand_loop(
    run: Any, G: nn.Module, phase: str, batch: dict[str, torch.Tensor]
) -> Callable[[], None]:
    """The phase's step(s) written as a careful user would, over ``G`` and a copy of D."""
    lr, hr = batch["lr"], batch["hr"]
    trained = [p for n, p in G.named_parameters() if n.split(".", 1)[0] in BRANCHES[phase]]
    for p in G.parameters():
        p.requires_grad_(False)
    for p in trained:
        p.requires_grad_(True)
    # foreach, as Loom's optimizers (torch's CPU default is a loop over the tensors)
    opt_g = torch.optim.Adam(trained, lr=2e-4, foreach=True)
    losses = run.losses
    which = OUTPUT[phase]
    if phase != "perception":
        criteria: list[nn.Module] = (
            [losses["content"]]
            if phase == "content"
            else [losses["structure_ml1"], losses["structure_msssim"]]
        )

        def step() -> None:
            out = outputs(G, lr)[which]
            loss = sum(c(out, hr) for c in criteria)
            opt_g.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[union-attr]
            opt_g.step()

        return step

    D = copy.deepcopy(run.networks["D"])
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, foreach=True)
    perceptual, gan_d, gan_g = losses["perception"], losses["d_loss"], losses["g_gan"]

    def gan_step() -> None:
        fake = outputs(G, lr)[which]
        for p in D.parameters():
            p.requires_grad_(True)
        d_loss = gan_d(D(fake.detach()), D(hr))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        for p in D.parameters():
            p.requires_grad_(False)
        real = D(hr).detach()
        g_loss = perceptual(fake, hr) + 5e-3 * gan_g(D(fake), real)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()

    return gan_step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase", choices=PHASES, default="perception")
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    overrides = [
        f"data.train.crop_size={args.crop}",
        f"data.train.batch_size={args.batch}",
        "+graph.perception.weights=random",  # the same random VGG19 for all three
    ]
    run = prepared_run("ppon.yaml", overrides, phase=PHASES.index(args.phase))
    hr = torch.rand(args.batch, 3, args.crop, args.crop)
    lr = F.interpolate(hr, scale_factor=0.25, mode="bicubic", align_corners=False).clamp(0, 1)
    batch = {"lr": lr, "hr": hr}

    compiled = run.networks["G"]
    plain = PlainPPON()
    plain.load_state_dict(compiled.state_dict())  # same names: nothing is renamed
    with torch.no_grad():
        difference = max(
            float((a - b).abs().max())
            for a, b in zip(outputs(plain, lr), outputs(compiled, lr), strict=True)
        )
    iteration = [run.phase.start]  # a step's `start` counts from its phase's first iteration

    def loom() -> None:
        run.iteration(iteration[0], run.phase, batch)
        iteration[0] += 1

    contenders = {
        "loom": loom,
        "hand": hand_loop(run, copy.deepcopy(compiled), args.phase, batch),
        "module": hand_loop(run, plain, args.phase, batch),
    }
    race_against_hand_loops(
        (
            f"PPON x4 {args.phase} iteration (nf 64, nb 24), CPU, {args.threads} threads, "
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
