"""One ESRGAN GAN iteration (D step, then G step with L1 + perceptual + relativistic
GAN) through Loom's runtime against a hand-written loop with the same networks, losses,
data and order, in one process, interleaved. Prints the median time ratio
Loom / hand-written (target ≤ 1.05) and what Loom's step program skipped.

The hand-written loop is written as a careful user would: the D step on a detached
fake, then the G step reusing the same fake, with the discriminator's parameters
excluded from the generator's backward.

Run: python benchmarks/bench_train.py [--crop 64] [--batch 2] [--repeats 7]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from _runtime import prepared_run


def setup(crop: int, batch: int):  # type: ignore[no-untyped-def]
    overrides = [
        f"data.train.crop_size={crop}",
        f"data.train.batch_size={batch}",
        "+graph.fea.weights=random",
        "train.phases.0.until=1",
    ]
    r = prepared_run("esrgan.yaml", overrides, phase=1)
    hr = torch.rand(batch, 3, crop, crop)
    lr = F.avg_pool2d(hr, 4)
    return r, r.phase, {"lr": lr, "hr": hr}


def hand_loop(r, batch):  # type: ignore[no-untyped-def]
    """Copies of the same networks and losses, trained by hand."""
    G = copy.deepcopy(r.networks["G"])
    D = copy.deepcopy(r.networks["D"])
    perceptual = r.losses["fea"]
    gan_d, gan_g = r.losses["d_loss"], r.losses["g_gan"]
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-4, betas=(0.9, 0.99))
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-4, betas=(0.9, 0.99))
    lr, hr = batch["lr"], batch["hr"]

    def step() -> None:
        fake = G(lr)
        for p in D.parameters():
            p.requires_grad_(True)
        d_loss = gan_d(D(fake.detach()), D(hr))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        for p in D.parameters():
            p.requires_grad_(False)
        real = D(hr).detach()
        g_loss = 1e-2 * F.l1_loss(fake, hr) + perceptual(fake, hr) + 5e-3 * gan_g(D(fake), real)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    r, gan, batch = setup(args.crop, args.batch)
    hand = hand_loop(r, batch)
    iteration = [10]

    def loom() -> None:
        r.iteration(iteration[0], gan, batch)
        iteration[0] += 1

    loom()
    hand()
    times: dict[str, list[float]] = {"loom": [], "hand": []}
    for i in range(args.repeats):
        order = [("loom", loom), ("hand", hand)]
        for name, fn in order if i % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    ratios = [a / b for a, b in zip(times["loom"], times["hand"], strict=True)]
    print(
        f"ESRGAN GAN iteration (nf 64, nb 23, VGG19 to conv5_4), CPU, batch {args.batch}, "
        f"HR crop {args.crop}"
    )
    print(
        f"  Loom {statistics.median(times['loom']):.3f}s, hand-written "
        f"{statistics.median(times['hand']):.3f}s, median ratio {statistics.median(ratios):.3f} "
        "(target ≤ 1.05)"
    )


if __name__ == "__main__":
    main()
