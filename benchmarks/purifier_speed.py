"""Purification and training speed against the reference implementation, side by side in one process,
and the throughput and peak memory of the presets.

    IMPURE_REFERENCE=/path/to/IMPure python benchmarks/purifier_speed.py [--threads 2] [--rounds 5]

IMPURE_REFERENCE points at a checkout of the paper's code (github.com/NoWindButRain/IMPure). It has no
licence, so nothing of it is copied here: the script imports its model file from the user's checkout and
builds it with the bundled purifier's architecture (patch 2, width 128, 4 + 2 blocks). Without it the
comparison is skipped with a message. The machine is shared and noisy, so every measurement is repeated
in interleaved rounds and the script prints ratios of medians; absolute times are only a guide.

- inference: one batch of 64 CIFAR-10-sized images (noise mode, eval), ours in float32 and with bfloat16
  weights, the reference in float32 (as its evaluation script runs it on a CPU);
- training, batch 32: the reference's forward (its own pixel loss) + backward + AdamW step, against
  `impure train` at its CPU defaults in the pre-training stage, everything in its loop (data, augmentation,
  loss, clipping, logging), as images per second.

`--presets` adds the throughput table of the presets (each in its own process, for its peak memory).

`--against cifar_resnet56 --purifier impure/cifar10 --purifier FOLDER ...` measures instead what each purifier
costs in units of the classifier's own inference: batch 64 at 32 px, eval mode, the purifiers and the classifier in
interleaved rounds in one process, as images/s and the ratio of medians (issue 41's budget is 3x ResNet-56), with
`--out` for a Markdown + JSON record that names the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from functools import partial
from pathlib import Path

import torch

from impure import Purifier, PurifierConfig, select_device, tune_cpu_allocator
from impure.model.reference import _PREFIXES

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BUNDLED = "impure/cifar10-s"
# Batch sizes per preset: the paper's ViT-B/16 is slow on a CPU.
BATCHES = {"reference-small": (1, 16, 64, 256), "cifar10-s": (1, 16, 64, 256), "paper-vitb16": (1, 8)}


def load_reference_model(checkout: Path, purifier: Purifier) -> torch.nn.Module:
    """The reference model class from `checkout`, built with `purifier`'s architecture and weights."""
    model_file = checkout / "recon_model" / "MAE" / "RCMMFFDMAE.py"
    if not model_file.is_file():
        raise FileNotFoundError(f"{model_file} not found: IMPURE_REFERENCE must be a checkout of the reference code")
    sys.path.insert(0, str(checkout))
    # Bare packages, so that importing the model file skips the package __init__ files (they import the
    # reference's data pipeline and its webdataset dependency, which the model does not need).
    for package in ("dataset", "recon_model", "recon_model.MAE"):
        module = types.ModuleType(package)
        module.__path__ = [str(checkout / package.replace(".", "/"))]
        sys.modules.setdefault(package, module)
    from recon_model.MAE.RCMMFFDMAE import RCMaskedMFFIntersectionDMaskedAutoencoderViT as Reference

    c = purifier.config
    reference = Reference(
        img_size=c.image_size, patch_size=c.patch_size, embed_dim=c.encoder_width, depth=c.encoder_depth,
        num_heads=c.encoder_heads, decoder_embed_dim=c.decoder_width, decoder_depth=c.decoder_depth,
        decoder_num_heads=c.decoder_heads, mlp_ratio=c.mlp_ratio,
        norm_layer=partial(torch.nn.LayerNorm, eps=c.norm_eps), pre_norm=True, chunks=c.num_groups,
        out_indices=list(c.fusion_taps), use_conv=c.output_conv, img_mask=c.mask_mode, feature_mask=c.mask_mode,
    )
    ours_to_theirs = {new: old for old, new in _PREFIXES}
    state = {}
    for key, tensor in purifier.state_dict().items():
        if key == "fusion_logits":
            state["proj_weights"] = tensor.view(-1, 1, 1, 1)
            continue
        prefix = next((p for p in ours_to_theirs if key.startswith(p)), None)
        state[key if prefix is None else ours_to_theirs[prefix] + key[len(prefix):]] = tensor
    missing, unexpected = reference.load_state_dict(state, strict=False)
    derived = {"pos_embed", "decoder_pos_embed", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod", "mask_token"}
    if unexpected or set(missing) - derived:
        raise RuntimeError(f"weights do not map onto the reference: missing {missing}, unexpected {unexpected}")
    return reference


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _reference_step(reference: torch.nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor) -> None:
    loss, _, _ = reference(images)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _train_config(folder: Path, steps: int, window: int) -> dict:
    """`impure train` pre-training of the bundled architecture, at its defaults, on the shared CIFAR-10."""
    overrides = {k: v for k, v in Purifier.from_pretrained(BUNDLED).config.to_dict().items()
                 if k not in ("image_noise_t", "feature_noise_t")}
    return {"stage": "pretrain", "output_dir": str(folder), "device": "cpu",
            "model": {"preset": "cifar10-s", "overrides": overrides},
            "data": {"train": str(SHARED / "data" / "cifar10" / "train_jpeg.npz"), "crop_padding": 2},
            "optim": {"steps": steps, "batch_size": 32, "warmup_steps": 1, "lr": 1e-3},
            "log": {"every": window, "checkpoint_every": 0, "progress": False}}


def compare_with_reference(checkout: Path, threads: int, rounds: int) -> None:
    from impure.training import TrainConfig, Trainer

    torch.set_num_threads(threads)
    purifier = Purifier.from_pretrained(BUNDLED)
    half = Purifier.from_pretrained(BUNDLED, dtype=torch.bfloat16)
    reference = load_reference_model(checkout, purifier).eval()
    images = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {"reference": [], "ours fp32": [], "ours bf16": []}
    with torch.no_grad():
        runs = {"reference": lambda: reference(images), "ours fp32": lambda: purifier(images),
                "ours bf16": lambda: half(images)}
        for run in runs.values():
            run()  # warm-up
        for _ in range(rounds):
            for name, run in runs.items():
                times[name].append(_seconds(run))
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"\nInference, batch 64 at 32 px, noise mode, {threads} threads, median of {rounds} interleaved rounds:")
    for name in ("ours fp32", "ours bf16"):
        print(f"  {name}: {median['reference'] / median[name]:.2f}x the reference "
              f"({median[name]:.3f} s vs {median['reference']:.3f} s)")

    reference.train()
    optimizer = torch.optim.AdamW([p for p in reference.parameters() if p.requires_grad], lr=1e-3)
    batch = images[:32]
    _reference_step(reference, optimizer, batch)
    window, rates = 4, {"reference": [], "ours": []}
    with tempfile.TemporaryDirectory() as folder:
        for index in range(rounds):
            rates["reference"].append(window * 32 / _seconds(
                lambda: [_reference_step(reference, optimizer, batch) for _ in range(window)]))
            trainer = Trainer(TrainConfig.from_dict(_train_config(Path(folder) / str(index), 2 * window, window)))
            trainer.fit()
            rates["ours"].append(trainer.history[-1]["images_per_s"])  # the second window: warmed up
    ours, theirs = statistics.median(rates["ours"]), statistics.median(rates["reference"])
    print(f"Training, batch 32, {threads} threads, median of {rounds} interleaved rounds: impure train "
          f"(pre-training) {ours / theirs:.2f}x the reference's forward + backward + AdamW "
          f"({ours:.1f} vs {theirs:.1f} images/s)")


def cpu_name() -> str:
    """The CPU's model name and the instruction sets that decide PyTorch's CPU kernels (for speed records)."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    present = [flag for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if flag in flags]
    return f"{model} ({', '.join(present) or 'no AVX2'})"


def compare_with_classifier(classifier_name: str, purifiers: list[str], threads: int, rounds: int,
                            out: Path | None) -> None:
    """Each purifier's inference cost as a multiple of the classifier's, side by side in interleaved rounds."""
    from _common import SHARED as shared
    from _common import WEIGHTS

    from impure.classifiers import load_classifier

    torch.set_num_threads(threads)
    classifier = load_classifier(classifier_name, shared / "models" / WEIGHTS[classifier_name]).eval()
    models = {classifier_name: classifier, **{name: Purifier.from_pretrained(name) for name in purifiers}}
    images = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            model(images)  # warm-up
        for _ in range(rounds):
            for name, model in models.items():
                times[name].append(_seconds(lambda model=model: model(images)))
    median = {name: statistics.median(values) for name, values in times.items()}
    rows = [{"model": name, "parameters": sum(p.numel() for p in model.parameters()),
             "images_per_s": 64 / median[name], "cost": median[name] / median[classifier_name]}
            for name, model in models.items()]
    cpu = cpu_name()
    lines = [f"Inference, batch 64 at 32 px, {threads} thread(s), median of {rounds} interleaved rounds, on {cpu}; "
             f"cost in units of {classifier_name}'s own inference:", "",
             "| model | parameters | images / s | cost |", "|---|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['parameters'] / 1e6:.2f} M | {r['images_per_s']:.1f} | {r['cost']:.2f}x |"
              for r in rows]
    print("\n".join(lines))
    if out is not None:
        from impure._util.atomic import atomic_write

        atomic_write(out / "purifier-cost.md", "\n".join(lines) + "\n")
        atomic_write(out / "purifier-cost.json", json.dumps({"argv": sys.argv[1:], "cpu": cpu, "threads": threads,
                                                              "rounds": rounds, "rows": rows}, indent=2) + "\n")


def measure_one(preset: str, batch: int, device_name: str, threads: int, repeats: int) -> dict:
    """Throughput and peak memory of one preset and batch size (run in its own process for CPU memory)."""
    torch.set_num_threads(threads)
    device = select_device(device_name)
    config = PurifierConfig.preset(preset)
    purifier = Purifier(config).eval().to(device)
    images = torch.rand(batch, 3, config.image_size, config.image_size, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        purifier(images)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = min(_seconds(lambda: (purifier(images), device.type == "cuda" and torch.cuda.synchronize()))
                      for _ in range(repeats))
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB
    return dict(preset=preset, batch=batch, device=device.type, seconds=seconds,
                images_per_s=batch / seconds, peak_mib=peak)


def preset_table(presets: list[str], device: str, threads: int, repeats: int) -> None:
    rows = []
    for preset in presets:
        for batch in BATCHES[preset]:
            command = [sys.executable, __file__, "--one", preset, str(batch), "--device", device,
                       "--threads", str(threads), "--repeats", str(repeats)]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    memory = "peak GPU MiB" if rows and rows[0]["device"] == "cuda" else "peak RSS MiB"
    print(f"| preset | batch | device | s / batch | images / s | {memory} |")
    print("|---|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['preset']} | {r['batch']} | {r['device']} | {r['seconds']:.3f} | {r['images_per_s']:.1f} | "
              f"{r['peak_mib']:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto", help="device of the preset table")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the comparison")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per row of the preset table")
    parser.add_argument("--presets", nargs="*", default=[], choices=list(BATCHES),
                        help="also print the throughput table of these presets")
    parser.add_argument("--allocator", choices=("tuned", "default"), default="tuned",
                        help="tuned: `tune_cpu_allocator()` for both sides, as `impure` runs; default: glibc's")
    parser.add_argument("--against", metavar="CLASSIFIER", choices=("cifar_resnet20", "cifar_resnet56"),
                        help="measure each --purifier's cost in units of this shared classifier's inference instead")
    parser.add_argument("--purifier", action="append", default=[], help="with --against; repeat for several")
    parser.add_argument("--out", type=Path, help="with --against: write purifier-cost.md and .json here")
    parser.add_argument("--one", nargs=2, metavar=("PRESET", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.allocator == "tuned":
        tune_cpu_allocator()  # as `impure` itself runs; the reference, in this process, gains from it too
    if args.against:
        if not args.purifier:
            parser.error("--against needs at least one --purifier")
        compare_with_classifier(args.against, args.purifier, args.threads, args.rounds, args.out)
        return
    if args.one:
        print(json.dumps(measure_one(args.one[0], int(args.one[1]), args.device, args.threads, args.repeats)))
        return
    if args.presets:
        preset_table(args.presets, args.device, args.threads, args.repeats)
    checkout = os.environ.get("IMPURE_REFERENCE")
    if not checkout:
        print("skipping the comparison with the reference: set IMPURE_REFERENCE to a checkout of "
              "https://github.com/NoWindButRain/IMPure")
        return
    compare_with_reference(Path(checkout), args.threads, args.rounds)


if __name__ == "__main__":
    main()
