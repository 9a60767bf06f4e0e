"""The training curve of a campaign: validation accuracy through the purifier (clean and grey-box) and PSNR
against the training images seen, from the runs' log.jsonl files, as a PNG and its data (JSON); with the
robust stage's white-box validation (`validation.white_box_limit`) too.

    python benchmarks/training_curve.py runs/cifar10-campaign [more run folders, in order] \
        --offset 30432 --out benchmarks/results/campaign-cifar10/curve

Each run folder holds the Trainer's log.jsonl and train_config.json (for the global batch), and the model's
config.json in model/ or its checkpoint.pt: each point records the noise timesteps the purifier was
validated at (`noise_t`: image, feature), and the plot marks where they change. Runs are
concatenated in the order given; --offset counts the images the starting weights had already seen (30,432
for impure/cifar10-s: 151 x 32 pre-training + 800 x 32 fine-tuning images). A campaign whose earlier run folders
are gone continues its committed curve with --continue-from (e.g. benchmarks/results/campaign-cifar10/curve.json),
and --lost-images counts the images of stretches in between whose logs were lost.
Needs matplotlib for the PNG.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from impure._util.atomic import atomic_write

METRICS = {"val/accuracy": "clean accuracy through the purifier", "val_adv/accuracy": "grey-box PGD-10 accuracy",
           "val_white/accuracy": "white-box PGD-10 accuracy (through the purifier)", "val/psnr": "PSNR (dB)"}


def validation_noise_t(run: Path) -> list[int] | None:
    """The (image, feature) noise timesteps a run's purifier was validated at, from its model or checkpoint."""
    if (run / "model" / "config.json").is_file():
        config = json.loads((run / "model" / "config.json").read_text())
    elif (run / "checkpoint.pt").is_file():
        from impure.training.checkpoint import load_checkpoint

        config = load_checkpoint(run / "checkpoint.pt")["purifier_config"]
    else:
        return None
    return [config["image_noise_t"], config["feature_noise_t"]]


def read_points(runs: list[Path], offset: int) -> list[dict]:
    """Validation records of the runs, with `images` = training images seen when each was taken."""
    points, seen = [], offset
    for run in runs:
        config = json.loads((run / "train_config.json").read_text())
        optim = config["optim"]
        per_step = optim["batch_size"] * optim["grad_accum"]  # the log's throughput counts all processes
        noise_t = validation_noise_t(run)
        last_step = 0
        for line in (run / "log.jsonl").read_text().splitlines():
            record = json.loads(line)
            last_step = max(last_step, record.get("step", 0))
            if "val/psnr" in record:
                points.append({"run": run.name, "step": record["step"], "images": seen + record["step"] * per_step,
                               **({"noise_t": noise_t} if noise_t else {}),
                               **{k: record[k] for k in METRICS if k in record}})
        seen += last_step * per_step
    return points


def plot(points: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, accuracy = plt.subplots(figsize=(7, 4.6))
    images = [p["images"] / 1000 for p in points]
    for key, style, colour in (("val/accuracy", "o-", "tab:blue"), ("val_adv/accuracy", "s-", "tab:orange"),
                               ("val_white/accuracy", "d-", "tab:red")):
        measured = [(x, p[key]) for x, p in zip(images, points, strict=True) if key in p]
        if measured:  # white-box: the robust stage's validation only
            accuracy.plot([x for x, _ in measured], [100 * v for _, v in measured], style, color=colour,
                          label=METRICS[key])
    accuracy.set_xlabel("training images seen (thousands)")
    accuracy.set_ylabel("ResNet-56 accuracy (%)")
    fidelity = accuracy.twinx()
    fidelity.plot(images, [p["val/psnr"] for p in points], "^--", color="tab:green", label=METRICS["val/psnr"])
    fidelity.set_ylabel("PSNR (dB)")
    for before, after, x in zip(points[:-1], points[1:], images[1:], strict=True):
        if before.get("noise_t") and after.get("noise_t") and before["noise_t"] != after["noise_t"]:
            accuracy.axvline(x, color="grey", linestyle=":", linewidth=1)
            accuracy.annotate("validated at noise t {}/{} from here".format(*after["noise_t"]), (x, 0.02),
                              xycoords=("data", "axes fraction"), rotation=90, fontsize=7, color="grey",
                              ha="right", va="bottom")
    lines = accuracy.get_legend_handles_labels()[0] + fidelity.get_legend_handles_labels()[0]
    labels = accuracy.get_legend_handles_labels()[1] + fidelity.get_legend_handles_labels()[1]
    accuracy.legend(lines, labels, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8,
                    frameon=False)  # below the axes: it never hides a curve
    accuracy.set_title(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders, in training order")
    parser.add_argument("--offset", type=int, default=0, help="training images the starting weights had seen")
    parser.add_argument("--out", type=Path, required=True, help="output stem: writes STEM.png and STEM.json")
    parser.add_argument("--continue-from", type=Path,
                        help="a curve JSON written earlier (its run folders may be gone): its points come first and "
                             "the runs continue from its last point's images (the weights they started from)")
    parser.add_argument("--lost-images", type=int, default=0,
                        help="training images between the last point and the first run, by stretches whose logs "
                             "were lost (their schedule's count); added to the images axis and recorded as "
                             "lost_images in the JSON")
    parser.add_argument("--title", default="impure/cifar10 campaign: validation on test_dev 0-249 (ResNet-56, "
                                           "never trained with)")
    args = parser.parse_args(argv)
    if args.lost_images < 0:
        parser.error(f"--lost-images must be >= 0, got {args.lost_images}")
    missing = [str(run) for run in args.runs if not (run / "log.jsonl").is_file()]
    if missing:
        print(f"no log.jsonl in {missing}", file=sys.stderr)
        return 2
    committed = json.loads(args.continue_from.read_text()) if args.continue_from else {"offset": args.offset}
    earlier = committed.get("points", [])
    offset = (earlier[-1]["images"] if earlier else args.offset) + args.lost_images
    points = earlier + read_points(args.runs, offset)
    if not points:
        print("the runs have no validation records yet", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    data = {"offset": committed["offset"], "points": points}
    lost = committed.get("lost_images", 0) + args.lost_images
    if lost:
        data["lost_images"] = lost
    atomic_write(args.out.with_suffix(".json"), json.dumps(data, indent=1) + "\n")
    plot(points, args.out.with_suffix(".png"), args.title)
    print(f"wrote {args.out.with_suffix('.png')} and {args.out.with_suffix('.json')} ({len(points)} points)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
