#!/usr/bin/env python
"""Loom's command line: a thin front over ``engine``. Run ``python cli.py --help``."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2

VALIDATE_HELP = """\
Check specs completely before anything runs: YAML, every key and value, blocks and
their parameters, references, cycles, optimizers and phases. Every problem is printed
as FILE:LINE:COL: severity: message; exit code 0 = valid, 2 = invalid.

examples:
  python cli.py validate specs/esrgan.yaml
  python cli.py validate specs/*.yaml
  python cli.py validate specs/esrgan.yaml train.iterations=2000   # with an override
  python cli.py validate specs/esrgan.yaml --json                  # for editors and CI
  python cli.py validate --strict specs/*.yaml    # CI on pull requests: no path leaves
"""

GRAPH_HELP = """\
Show the expanded graph of a network (every composite block and repeat unrolled, with
hierarchical names) or, without --net, the training graph. --format code compiles the
network and prints the generated PyTorch code of its forward.

examples:
  python cli.py graph specs/esrgan.yaml --net G
  python cli.py graph specs/esrgan.yaml --net D --format dot | dot -Tsvg > d.svg
  python cli.py graph specs/esrgan.yaml --format mermaid
  python cli.py graph specs/esrgan.yaml --net G --format code
"""

INSPECT_HELP = """\
A dry run on the meta device (no memory, no data): per node the output shape,
parameters, MACs per sample and activation memory at the configured batch and crop;
totals per network; the smallest input each network accepts and the size multiple it
needs. Shape problems are reported at the node's place in the spec.

examples:
  python cli.py inspect specs/esrgan.yaml
  python cli.py inspect specs/esrgan.yaml --net G --depth 2
  python cli.py inspect specs/esrgan.yaml data.train.batch_size=4 --json
"""

RUN_HELP = """\
Train a spec with Hugging Face Accelerate: CPU, one GPU, or several GPUs and machines
through `accelerate launch` / `torchrun` with no change to the spec. The run folder
gets spec.resolved.yaml, metrics.jsonl, train.log, checkpoints/, models/ and samples/.
Ctrl-C or SIGTERM saves a checkpoint and exits 0; --resume auto continues the newest
intact one. One run writes a folder at a time; a folder holding a run needs --resume
or --overwrite (which moves the old run aside).

examples:
  python cli.py run specs/quickstart.yaml
  python cli.py run specs/esrgan.yaml train.iterations=2000 --out runs/esrgan
  python cli.py run specs/esrgan.yaml --out runs/esrgan --resume auto
  python cli.py run specs/esrgan.yaml optimizers.G.lr=5e-5 --out runs/esrgan \
      --resume auto --resume-changes optimizers.G.lr
  accelerate launch --num_processes 2 cli.py run specs/esrgan.yaml --out runs/ddp
"""

PLOT_HELP = """\
A picture of a run from its folder: each loss (raw and smoothed), the learning rates,
the validation metrics with their baseline (bicubic, or the degraded input at 1x),
phase boundaries marked, and the validation samples across rounds. Several runs are
overlaid for comparison (then --out is needed). Needs matplotlib (pip install
'loom[plot]'). Exit code 0 = written, 2 = not a run, nothing logged yet, or no
matplotlib. See docs/monitoring.md.

examples:
  python cli.py plot runs/quickstart                      # writes runs/quickstart/plot.png
  python cli.py plot runs/esrgan --out esrgan.png --smoothing 0.9
  python cli.py plot runs/a runs/b --out compare.png --no-samples
"""

SCHEMA_HELP = """\
Regenerate the JSON Schemas under schemas/ from the blocks' Python signatures (the
spec skeleton, and one file per block), docs/blocks.md, and docs/settings.md from the
settings classes. --check only reports stale files (exit 1).

examples:
  python cli.py schema
  python cli.py schema --check
"""

INFER_HELP = """\
Apply a trained network to images: a run folder (its spec.resolved.yaml and newest
exported weights, EMA when the run kept one) or a spec with --weights. --input is a
file, a folder (recursive; results keep their relative paths) or a quoted glob. Gray
in gives gray out; alpha is run through the network as a gray image (--alpha resize
upscales it instead; drop leaves it out). A file that fails is named and skipped; exit
code 0 = every image written, N = N images failed (100 = 100 or more), 2 = nothing
could start. Video: a frame interpolator (RIFE) doubles the frame rate of each folder
of frames; a video SR network runs every frame of each folder with its window (edges
reflected), one output per frame with the same names. See docs/inference.md.

examples:
  python cli.py infer runs/quickstart --input photos/ --output out/
  python cli.py infer runs/vsr --input clips/ --output clips_x4/
  python cli.py infer runs/esrgan --input photos/ --output out/ --tile 256 --precision fp16
  python cli.py infer specs/cyclegan.yaml --weights G_B.safetensors --net G_B \\
      --input "horses/**/*.jpg" --output zebras/
  python cli.py infer runs/wbc --input photo.jpg --output out/ --output-port raw
"""

EXPORT_HELP = """\
Export a trained network: ONNX (dynamic batch, height and width, opset 18, optionally
fp16; checked against onnxruntime on a random input, the largest difference printed),
safetensors with metadata (spec name and sha256, network, scale, input channels, size
multiple), or .pth in the canonical community layout where one exists (ESRGAN, compact,
PAN: chaiNNer/spandrel load it). See docs/inference.md.

examples:
  python cli.py export runs/esrgan --format onnx --out esrgan.onnx
  python cli.py export runs/esrgan --format onnx --fp16
  python cli.py export runs/cyclegan --net G_A --format safetensors
  python cli.py export specs/esrgan.yaml --weights G.safetensors --format pth --out G.pth
"""

INTERPOLATE_HELP = """\
Blend models trained from the same start, tensor by tensor: (1 - alpha)*A + alpha*B,
or several models with --weights summing to 1. Integer buffers are copied from the
first model; models whose keys or shapes differ are refused with the differences
named. Sources are weights files or run folders (their newest export of --net).

examples:
  python cli.py interpolate runs/wbc_a runs/wbc_b --alpha 0.3 --out wbc_blend.safetensors
  python cli.py interpolate psnr.pth gan.pth --alpha 0.8 --out blend.pth
  python cli.py interpolate a.pth b.pth c.pth --weights 0.5 0.3 0.2 --out abc.pth
"""

IMPORT_HELP = """\
Convert an option file of traiNNer (JSON with // comments, or YAML), BasicSR or
traiNNer-redux (YAML) into a Loom spec: networks with their hyperparameters, losses
and weights, optimizers, schedules, iterations, virtual batch, datasets and pretrained
weights. Every option that is not mapped is listed at its FILE:LINE:COL with the
reason, printed and written into the spec's comment header. Exit code 0 = written
(warnings for unmapped options), 2 = unreadable or unknown option file. See
docs/import.md.

examples:
  python cli.py import train_ESRGAN.json -o specs/my_esrgan.yaml
  python cli.py import options/train/ESRGAN/train_ESRGAN_x4.yml -o esrgan.yaml --force
  python cli.py import train_cyclegan.yml            # print the spec, write nothing
"""


def _split(args: list[str]) -> tuple[list[str], list[str]]:
    """Positional arguments → (spec paths, overrides written key=value)."""
    overrides = [a for a in args if "=" in a]
    paths = [a for a in args if "=" not in a]
    return paths, overrides


def cmd_validate(ns: argparse.Namespace) -> int:
    from engine.load import check_library, check_spec, is_library

    paths, overrides = _split(ns.items)
    if not paths:
        print("validate: give at least one spec file", file=sys.stderr)
        return EXIT_INVALID
    all_ok = True
    report = []
    for path in paths:
        if is_library(path) and not overrides:
            spec, diags = None, check_library(path, allow=ns.allow_path)
            ok = not diags.errors
        else:
            spec, diags = check_spec(path, overrides, allow=ns.allow_path, strict=ns.strict)
            ok = spec is not None
        all_ok &= ok
        if ns.json:
            report.append(
                {"spec": path, "valid": ok, "diagnostics": [d.as_json() for d in diags.sorted()]}
            )
            continue
        for d in diags.sorted():
            print(d, file=sys.stderr if d.severity == "error" else sys.stdout)
        if ok:
            print(
                f"{path}: valid" + (f" ({len(diags.warnings)} warnings)" if diags.warnings else "")
            )
        else:
            print(f"{path}: {len(diags.errors)} errors", file=sys.stderr)
    if ns.json:
        print(json.dumps(report if len(report) > 1 else report[0], indent=2))
    return EXIT_OK if all_ok else EXIT_INVALID


def _print_diagnostics(diags) -> None:  # type: ignore[no-untyped-def]
    for d in diags.sorted():
        print(d, file=sys.stderr if d.severity == "error" else sys.stdout)


def _load(ns: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The spec of a one-spec command (with its overrides), or None after printing why."""
    from engine.load import check_spec
    from engine.spec.diagnostics import did_you_mean

    paths, overrides = _split([ns.spec, *ns.overrides])
    spec, diags = check_spec(paths[0], overrides, allow=ns.allow_path)
    _print_diagnostics(diags)
    if spec is None:
        return None
    net = getattr(ns, "net", None)
    if net is not None and net not in spec.networks:
        print(
            f"{ns.command}: no network '{net}'{did_you_mean(net, spec.networks)}; networks: "
            f"{', '.join(spec.networks)}",
            file=sys.stderr,
        )
        return None
    return spec


def cmd_graph(ns: argparse.Namespace) -> int:
    from engine.graph import render

    spec = _load(ns)
    if spec is None:
        return EXIT_INVALID
    net = spec.networks[ns.net] if ns.net else None
    if ns.format == "code":
        if net is None:
            print("graph: --format code needs --net NAME", file=sys.stderr)
            return EXIT_INVALID
        from engine.compile.build import build

        print(build(spec)[net.name].code.strip())
        return EXIT_OK
    if ns.format == "dot":
        print(render.network_dot(net) if net else render.training_dot(spec.training))
    elif ns.format == "mermaid":
        print(render.network_mermaid(net) if net else render.training_mermaid(spec.training))
    elif sys.stdout.isatty():
        _rich_tree(spec, net)
    else:
        lines = render.tree_lines(net) if net else render.training_lines(spec.training)
        print("\n".join(lines))
    return EXIT_OK


def _rich_tree(spec, net) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.tree import Tree

    from engine.graph import render

    console = Console()
    if net is None:
        console.print("\n".join(render.training_lines(spec.training)))
        return
    tree = Tree(f"[bold]{net.name}[/]")

    def walk(node: Tree, sub: dict) -> None:  # type: ignore[type-arg]
        for key, value in sub.items():
            if isinstance(value, dict):
                walk(node.add(f"[cyan]{key}[/]"), value)
            else:
                node.add(render.leaf_label(key, value), highlight=False)

    walk(tree, render.network_tree(net))
    console.print(tree)


def cmd_inspect(ns: argparse.Namespace) -> int:
    from engine.spec.diagnostics import SpecError

    spec = _load(ns)
    if spec is None:
        return EXIT_INVALID
    from engine.compile import inspect as report

    try:
        reports = report.inspect_spec(spec, probe_sizes=not ns.no_probe)
    except SpecError as exc:
        _print_diagnostics(exc.diagnostics)
        return EXIT_INVALID
    reports = [r for r in reports if ns.net in (None, r.name)]
    if ns.depth is not None:
        reports = [report.grouped(r, ns.depth) for r in reports]
    if ns.json:
        print(json.dumps(report.as_json(reports), indent=2))
    else:
        print("\n\n".join("\n".join(report.text_lines(r)) for r in reports))
    return EXIT_OK


def _print_error(exc: BaseException, *, debug: bool) -> None:
    """The error's message; with --debug its traceback first (a data worker's included)."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    print(f"error: {exc}", file=sys.stderr)


def cmd_run(ns: argparse.Namespace) -> int:
    from engine.spec.diagnostics import SpecError

    spec = _load(ns)
    if spec is None:
        return EXIT_INVALID
    from engine.data import DataError
    from engine.train.checkpoint import CheckpointError
    from engine.train.runfolder import RunFolderError
    from engine.train.runner import TrainingError, run

    try:
        result = run(
            spec,
            out=ns.out,
            resume=ns.resume,
            resume_changes=ns.resume_changes,
            resume_from_other=ns.resume_from_other,
            overwrite=ns.overwrite,
            keep_models=ns.keep_models,
        )
    except SpecError as exc:
        _print_diagnostics(exc.diagnostics)
        return EXIT_INVALID
    except (DataError, CheckpointError) as exc:
        _print_error(exc, debug=ns.debug)
        return EXIT_INVALID
    except (TrainingError, RunFolderError) as exc:
        _print_error(exc, debug=ns.debug)
        return EXIT_FAILED
    print(
        f"{'stopped' if result.interrupted else 'finished'} at iteration {result.iteration}; "
        f"run folder: {result.run_dir}"
    )
    return EXIT_OK


def _open_model(ns: argparse.Namespace, *, need_weights: bool = True, windows: bool = False):  # type: ignore[no-untyped-def]
    from engine.apply.source import open_model

    return open_model(
        ns.source,
        weights=ns.weights,
        net=ns.net,
        port=getattr(ns, "output_port", None),
        overrides=ns.overrides,
        need_weights=need_weights,
        windows=windows,
    )


def _open_frame_interpolator(ns: argparse.Namespace):  # type: ignore[no-untyped-def]
    from engine.apply.frame_rate import open_interpolator

    return open_interpolator(
        ns.source,
        weights=ns.weights,
        net=ns.net,
        port=getattr(ns, "output_port", None),
        overrides=ns.overrides,
    )


def _double_frame_rate(frames, items, ns, options):  # type: ignore[no-untyped-def]
    from engine.apply.frame_rate import double_frame_rate
    from engine.apply.source import ApplyError

    if options.tile is not None:
        raise ApplyError("--tile does not apply to frame interpolation: flows need whole frames")
    fmt = "png" if options.format == "same" else options.format
    return double_frame_rate(
        frames,
        items,
        Path(ns.output),
        device=options.device,
        fmt=fmt,
        quality=options.quality,
        log=lambda text: print(text, file=sys.stderr, flush=True),
    )


def cmd_infer(ns: argparse.Namespace) -> int:
    from engine.apply.images import InputError, list_inputs
    from engine.apply.infer import InferOptions, infer
    from engine.apply.source import ApplyError

    options = InferOptions(
        tile=ns.tile,
        overlap=ns.overlap,
        precision=ns.precision,
        device=ns.device,
        batch=ns.batch,
        channels_last=ns.channels_last,
        alpha=ns.alpha,
        format=ns.format,
        bits=ns.bits,
        quality=ns.quality,
        skip_existing=ns.skip_existing,
        progress=False if ns.plain else None,
    )
    if ns.max_megapixels is not None:
        options.max_megapixels = ns.max_megapixels
    try:
        items = list_inputs(ns.input, exclude=Path(ns.output))
        frames = _open_frame_interpolator(ns)
        if frames is not None:  # RIFE: each folder of frames at twice the frame rate
            result = _double_frame_rate(frames, items, ns, options)
        else:
            model = _open_model(ns, windows=True)
            if model.frames is not None:  # video SR: each frame with its window
                from engine.apply.video_sr import super_resolve_sequences

                result = super_resolve_sequences(model, items, Path(ns.output), options)
            else:
                result = infer(model, items, Path(ns.output), options)
    except (ApplyError, InputError) as exc:
        print(f"infer: {exc}", file=sys.stderr)
        return EXIT_INVALID
    rate = len(result.done) / result.seconds if result.seconds else 0.0
    print(
        f"infer: {len(result.done)} written to {ns.output}, {len(result.skipped)} skipped, "
        f"{len(result.failed)} failed ({result.seconds:.1f} s, {rate:.2f} images/s)"
    )
    for path, why in result.failed:
        print(f"  failed: {path}: {why}", file=sys.stderr)
    return min(len(result.failed), 100)


def cmd_export(ns: argparse.Namespace) -> int:
    from engine.apply.export import export_model
    from engine.apply.source import ApplyError

    try:
        model = _open_model(ns, need_weights=not ns.untrained)
        result = export_model(
            model,
            ns.format,
            Path(ns.out) if ns.out else None,
            layout=ns.layout,
            fp16=ns.fp16,
            check=not ns.no_check,
        )
    except ApplyError as exc:
        print(f"export: {exc}", file=sys.stderr)
        return EXIT_INVALID
    line = f"export: network {model.net} ({model.port}) written to {result.path}"
    if result.layout:
        line += f" (layout {result.layout})"
    print(line)
    if result.max_abs_diff is not None and result.checked_size is not None:
        h, w = result.checked_size
        print(
            f"  onnxruntime vs PyTorch on a random {h}x{w} input: "
            f"max abs diff {result.max_abs_diff:.3g}"
        )
    return EXIT_OK


def cmd_interpolate(ns: argparse.Namespace) -> int:
    from engine.apply import interpolate as blend
    from engine.apply.source import ApplyError

    try:
        result = blend.interpolate(ns.models, alpha=ns.alpha, weights=ns.weights, net=ns.net)
        out = blend.save(result, Path(ns.out))
    except ApplyError as exc:
        print(f"interpolate: {exc}", file=sys.stderr)
        return EXIT_INVALID
    recipe = " + ".join(f"{w:g}·{p}" for w, p in zip(result.weights, result.sources, strict=True))
    print(f"interpolate: {recipe} written to {out} ({len(result.state)} tensors)")
    return EXIT_OK


def cmd_import(ns: argparse.Namespace) -> int:
    from engine.importer import OptionFileError, convert

    out = Path(ns.output) if ns.output else None
    if out is not None and out.exists() and not ns.force:
        print(f"import: {out} exists; give --force to overwrite it", file=sys.stderr)
        return EXIT_INVALID
    try:
        result = convert(ns.file, out)
    except OptionFileError as exc:
        print(f"import: {exc}", file=sys.stderr)
        return EXIT_INVALID
    for note in result.notes:
        print(f"{note.loc or ns.file}: warning: {note.key}: {note.reason}", file=sys.stderr)
    if out is None:
        print(result.text, end="")
        return EXIT_OK
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(result.text, encoding="utf-8")
    except OSError as exc:
        print(f"import: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_INVALID
    print(
        f"import: {result.format} option file written as {out} "
        f"({len(result.notes)} options not mapped or mapped with a difference); "
        f"next: python cli.py validate {out}"
    )
    return EXIT_OK


def cmd_plot(ns: argparse.Namespace) -> int:
    from engine.plot import PlotError, write

    if not 0 <= ns.smoothing < 1:
        print(f"plot: --smoothing must be in [0, 1), not {ns.smoothing}", file=sys.stderr)
        return EXIT_INVALID
    try:
        out = write(ns.runs, ns.out, smoothing=ns.smoothing, samples=not ns.no_samples)
    except PlotError as exc:
        print(f"plot: {exc}", file=sys.stderr)
        return EXIT_INVALID
    print(f"plot: {', '.join(ns.runs)} drawn in {out}")
    return EXIT_OK


def cmd_schema(ns: argparse.Namespace) -> int:
    from engine.settings import docs as settings_docs
    from engine.spec import schema_files

    if ns.check:
        problems = schema_files.stale()
        if settings_docs.stale():
            problems.append("docs/settings.md")
        for rel in problems:
            print(f"{rel} is stale; run: python cli.py schema")
        return EXIT_FAILED if problems else EXIT_OK
    written = [*schema_files.write(), settings_docs.write()]
    print(f"wrote {len(written)} files (schemas/, docs/blocks.md and docs/settings.md)")
    return EXIT_OK


def _allow_path(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-path",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder outside the spec's project that extends/imports/use may reach "
        "(repeatable; see docs/spec-language.md)",
    )


def _model_source(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="a run folder, or a spec with --weights")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="spec overrides")
    parser.add_argument("--weights", metavar="FILE", help="trained weights (.safetensors, .pth)")
    parser.add_argument("--net", help="the network, for specs with several (CycleGAN's G_B)")


def build_parser(prog: str = "python cli.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Loom: declarative graph-spec training engine for image models.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Run '{prog} COMMAND --help' for each command's options and examples.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser(
        "validate",
        help="check specs; every error at FILE:LINE:COL",
        description=VALIDATE_HELP,
        formatter_class=fmt,
    )
    p.add_argument(
        "items",
        nargs="+",
        metavar="SPEC_OR_OVERRIDE",
        help="spec files, and overrides written key.path=value",
    )
    p.add_argument("--json", action="store_true", help="print the diagnostics as JSON")
    p.add_argument(
        "--strict",
        action="store_true",
        help="CI mode for specs from others: data and weights paths must also stay inside "
        "the spec's project (no absolute paths)",
    )
    _allow_path(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "graph",
        help="show a network's expanded graph or the training graph",
        description=GRAPH_HELP,
        formatter_class=fmt,
    )
    p.add_argument("spec", help="the spec file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides")
    p.add_argument("--net", help="the network to show (default: the training graph)")
    p.add_argument("--format", choices=["tree", "dot", "mermaid", "code"], default="tree")
    _allow_path(p)
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("run", help="train a spec", description=RUN_HELP, formatter_class=fmt)
    p.add_argument("spec", help="the spec file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides")
    p.add_argument("--out", help="the run folder (default: runs/<spec name>)")
    p.add_argument("--resume", help="'auto' (newest checkpoint in --out) or a checkpoint/run path")
    p.add_argument(
        "--resume-changes",
        action="append",
        default=[],
        metavar="KEYS",
        help="spec keys whose change the resume may take, comma-separated, globs allowed "
        "(optimizers.*.lr,train.iterations); 'allow' takes every change that can be taken",
    )
    p.add_argument(
        "--resume-from-other",
        action="store_true",
        help="resume a checkpoint written by another spec (another name) under this one",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start fresh in an --out that holds a run: the old run is moved aside to "
        "OUT.previous-N (never deleted)",
    )
    p.add_argument(
        "--keep-models",
        type=int,
        metavar="N",
        help="models/ keeps the exports of the newest N saves (default: checkpoints.keep; "
        "0 keeps all)",
    )
    p.add_argument(
        "--debug", action="store_true", help="print the traceback of a data or training error"
    )
    _allow_path(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "inspect",
        help="shapes, parameters, MACs and memory per node",
        description=INSPECT_HELP,
        formatter_class=fmt,
    )
    p.add_argument("spec", help="the spec file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides")
    p.add_argument("--net", help="only this network")
    p.add_argument("--depth", type=int, help="sum nodes by the first N parts of their names")
    p.add_argument("--no-probe", action="store_true", help="skip probing accepted input sizes")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    _allow_path(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "infer",
        help="apply a trained network to images",
        description=INFER_HELP,
        formatter_class=fmt,
    )
    _model_source(p)
    p.add_argument("--input", required=True, help="an image, a folder (recursive) or a glob")
    p.add_argument("--output", required=True, metavar="DIR", help="where results are written")
    p.add_argument("--output-port", help="the network output to write (default: its first)")
    p.add_argument("--tile", type=int, metavar="N", help="run N×N tiles (bounded memory)")
    p.add_argument(
        "--overlap",
        type=int,
        default=16,
        metavar="N",
        help="context per tile side in input pixels; tiled equals whole when it covers the "
        "network's receptive field (default 16)",
    )
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32")
    p.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when available)")
    p.add_argument("--batch", type=int, default=1, help="images of one size run together")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    p.add_argument(
        "--alpha",
        choices=["network", "resize", "drop"],
        default="network",
        help="an alpha channel: through the network as gray (default), bicubic resize, or drop",
    )
    p.add_argument("--format", choices=["png", "jpg", "webp", "bmp", "tif", "same"], default="png")
    p.add_argument(
        "--bits",
        choices=["auto", "8", "16"],
        default="auto",
        help="output bit depth; auto: 16 for 16-bit inputs (png/tif only)",
    )
    p.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality")
    p.add_argument(
        "--max-megapixels",
        type=float,
        metavar="N",
        help="refuse larger images, as decompression bombs (default: the data side's 200)",
    )
    p.add_argument("--skip-existing", action="store_true", help="leave existing outputs alone")
    p.add_argument("--plain", action="store_true", help="plain lines even on a terminal")
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser(
        "export",
        help="export a trained network (ONNX, safetensors, .pth)",
        description=EXPORT_HELP,
        formatter_class=fmt,
    )
    _model_source(p)
    p.add_argument("--format", choices=["onnx", "safetensors", "pth"], required=True)
    p.add_argument("--out", metavar="PATH", help="the file (default: <spec>_<net>.<format>)")
    p.add_argument("--output-port", help="the network output to export (default: its first)")
    p.add_argument(
        "--layout",
        choices=["loom", "esrgan", "esrgan_old", "compact", "pan", "pan_trainner"],
        help="key names of safetensors/.pth (default: the canonical one the network matches)",
    )
    p.add_argument("--fp16", action="store_true", help="ONNX in half precision")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    p.add_argument(
        "--untrained", action="store_true", help="a spec without --weights: its initialization"
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "interpolate",
        help="blend models: (1 - alpha)*A + alpha*B",
        description=INTERPOLATE_HELP,
        formatter_class=fmt,
    )
    p.add_argument("models", nargs="+", metavar="MODEL", help="weights files or run folders")
    p.add_argument("--alpha", type=float, help="the second model's weight (two models)")
    p.add_argument("--weights", type=float, nargs="+", metavar="W", help="one per model, sum 1")
    p.add_argument("--out", required=True, metavar="FILE", help=".safetensors or .pth")
    p.add_argument("--net", help="the network of run folders with several")
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser(
        "import",
        help="convert a traiNNer / BasicSR / traiNNer-redux option file into a spec",
        description=IMPORT_HELP,
        formatter_class=fmt,
    )
    p.add_argument("file", metavar="FILE", help="the option file (.json or .yml)")
    p.add_argument("-o", "--output", metavar="SPEC", help="write the spec here (default: print)")
    p.add_argument("--force", action="store_true", help="overwrite an existing SPEC")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser(
        "plot",
        help="a picture of runs: losses, learning rates, validation, samples",
        description=PLOT_HELP,
        formatter_class=fmt,
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (several are overlaid)")
    p.add_argument("--out", metavar="FILE.png", help="the picture (default: RUN/plot.png)")
    p.add_argument(
        "--smoothing",
        type=float,
        default=0.6,
        help="TensorBoard-style smoothing of the losses, in [0, 1) (default 0.6; 0: off)",
    )
    p.add_argument("--no-samples", action="store_true", help="leave out the sample grid")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser(
        "schema",
        help="regenerate the JSON Schemas under schemas/",
        description=SCHEMA_HELP,
        formatter_class=fmt,
    )
    p.add_argument("--check", action="store_true", help="report stale schema files; write nothing")
    p.set_defaults(func=cmd_schema)
    return parser


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    # Help and usage errors name the command as it was typed: `loom` or `python cli.py`.
    parser = build_parser("loom" if Path(sys.argv[0]).name == "loom" else "python cli.py")
    ns, extra = parser.parse_known_args(argv)
    # Overrides may also follow options (`run SPEC --out DIR a.b=c`).
    listed = "overrides" if hasattr(ns, "overrides") else "items" if hasattr(ns, "items") else ""
    if extra and listed and all("=" in e and not e.startswith("-") for e in extra):
        setattr(ns, listed, [*getattr(ns, listed), *extra])
    elif extra:
        parser.parse_args(argv)  # argparse's own error for what is not an override
    try:
        return int(ns.func(ns))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
