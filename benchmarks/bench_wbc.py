"""White-box Cartoonization: one training iteration on the CPU at crop 256, batch 4, and
what it is made of.

The iteration (D step, then G step: surface, texture, structure, content and total
variation) runs through Loom's runtime on a real batch of the built-in photos and
cartoons. Each component is then timed on its own, at the same shapes, doing what the
iteration does with it:

* generator — G (U-Net and guided filter) forward and backward;
* discriminators — the D step (both discriminators on fake and real, forward and
  backward) and the G step's adversarial terms (forward, backward to the image);
* superpixel targets — the superpixel op (SLIC, 200 segments, adaptive colouring) on
  the batch, on the threads the spec gives it, without gradients;
* perceptual — VGG19 to conv4_4: the output with gradients (once, shared by the
  structure and content losses) and backward, the superpixel image and the photo
  without; also timed without sharing (the output's features computed twice);
* filters — the surface guided filters and the colour shifts, forward and backward.

The components add up to about the iteration; the difference is the optimizer steps,
the losses' arithmetic and the step program. VGG19 weights are random unless
torchvision's file is in torch's hub cache (the time is the same).

Run: python benchmarks/bench_wbc.py [--crop 256] [--batch 4] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
from _runtime import prepared_run

from blocks.builtin.vgg import imagenet_path
from blocks.memo import step_memo


def median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    weights = "imagenet" if imagenet_path().is_file() else "random"
    overrides = [
        f"data.train.crop_size={args.crop}",
        f"data.train.batch_size={args.batch}",
        f"params.vgg_weights={weights}",
        "train.phases.0.until=1",
    ]
    r = prepared_run("wbc.yaml", overrides, phase=1, data=True)
    batch = next(iter(r.loader))
    photo, cartoon = batch["A"], batch["B"]
    G, Ds, Dt = r.networks["G"], r.networks["D_surface"], r.networks["D_texture"]
    ops, losses = r.ops, r.losses
    iteration = [10]

    def whole() -> None:
        r.iteration(iteration[0], r.phase, batch)
        iteration[0] += 1

    def generator() -> None:
        out = G(x=photo)["out"]
        out.mean().backward()

    with torch.no_grad():
        fake = G(x=photo)["out"]
        superpixels = ops["superpixels"](fake)

    def discriminators() -> None:
        surf_fake, surf_real = ops["surf_out_d"](fake), ops["surf_real"](cartoon)
        tex_fake, tex_real = ops["tex_d"](fake, cartoon)
        d_loss = sum(D(x=x).mean() for D, x in [(Ds, surf_fake), (Ds, surf_real)])
        d_loss = d_loss + sum(Dt(x=x).mean() for x in (tex_fake, tex_real))
        d_loss.backward()
        image = fake.detach().requires_grad_()
        for D in (Ds, Dt):
            D.requires_grad_(False)
        g_loss = Ds(x=ops["surf_out"](image)).mean() + Dt(x=ops["tex"](image, cartoon)[0]).mean()
        g_loss.backward()
        for D in (Ds, Dt):
            D.requires_grad_(True)

    def superpixel_targets() -> None:
        with torch.no_grad():
            ops["superpixels"](fake)

    def perceptual(shared: bool) -> Callable[[], None]:
        def step() -> None:
            image = fake.detach().requires_grad_()
            with step_memo() if shared else nullcontext():
                loss = losses["structure_l"](image, superpixels)
                loss = loss + losses["content_l"](image, photo)
            loss.backward()

        return step

    def filters() -> None:
        image = fake.detach().requires_grad_()
        total = ops["surf_out"](image).mean() + ops["tex"](image, cartoon)[0].mean()
        total.backward()

    parts = {
        "generator": generator,
        "discriminators": discriminators,
        "superpixel targets": superpixel_targets,
        "perceptual (shared features)": perceptual(True),
        "filters and colour shift": filters,
    }
    times = {"iteration": median_time(whole, args.repeats)}
    times.update({name: median_time(fn, args.repeats) for name, fn in parts.items()})
    unshared = median_time(perceptual(False), args.repeats)
    total = times["iteration"]
    threads = torch.get_num_threads()
    print(
        f"WBC iteration (G nf 32, 4 blocks; PatchGAN D nf 32 ×2; VGG19 to conv4_4, "
        f"{weights} weights), CPU with {threads} threads, batch {args.batch}, crop {args.crop}"
    )
    print(f"  whole iteration (median of {args.repeats}): {total:.2f} s")
    for name in parts:
        print(f"  {name:<36} {times[name]:6.2f} s  {100 * times[name] / total:5.1f}%")
    rest = total - sum(times[name] for name in parts)
    label = "rest (optimizers, losses, program)"
    print(f"  {label:<36} {rest:6.2f} s  {100 * rest / total:5.1f}%")
    print(
        f"  perceptual without sharing: {unshared:.2f} s; sharing the output's features "
        f"saves {unshared - times['perceptual (shared features)']:.2f} s per iteration"
    )


if __name__ == "__main__":
    main()
