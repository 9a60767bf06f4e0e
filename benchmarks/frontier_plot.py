"""Draw accuracy-robustness frontiers: clean accuracy through each purifier against its grey-box mean, one line
per purifier over its strengths, from the seed means (or single-seed reports) that frontier.py writes.

    python benchmarks/frontier_plot.py RESULTS/seed-means.json [MORE.json ...] --out frontier.png
        [--title "..."] [--label-suffix " t="]

Rows whose defence labels share a prefix before `--label-suffix` (by default " t=" or " s=", the noise
timesteps or the strength that frontier.py appends) form one line; each point is annotated with its noise t
(or, for older reports, its strength). Needs matplotlib.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path


def points(paths: list[Path], suffix: str | None = None) -> dict[str, list[tuple[float, float, str]]]:
    """{purifier label: [(clean %, grey-box mean %, noise t text), ...] sorted by clean accuracy}."""
    lines: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for path in paths:
        payload = json.loads(path.read_text(encoding="utf-8"))
        if "rows" in payload:  # seed-means.json
            rows = [(r["defence"], r["clean"]["mean"], r["mean"]["mean"], r.get("noise_t")) for r in payload["rows"]]
        else:  # frontier.json of one seed
            rows = [(r["defence"], r["defended_accuracy"], r["mean"]["grey-box"], r.get("noise_t"))
                    for r in payload["results"]]
        for label, clean, mean, noise_t in rows:
            cut = suffix or next((s for s in (" t=", " s=") if s in label), " t=")
            name, _, setting = label.partition(cut)
            note = f"t {noise_t[0]}/{noise_t[1]}" if noise_t else (cut.strip() + setting if setting else "")
            lines[name].append((100 * clean, 100 * mean, note))
    return {name: sorted(set(values)) for name, values in lines.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="seed-means.json or frontier.json files")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--title", default="", help="the figure's title")
    parser.add_argument("--label-suffix", help="where a purifier's label ends and its setting begins "
                                                "(default: ' t=' or ' s=')")
    args = parser.parse_args(argv)
    missing = [str(path) for path in args.results if not path.is_file()]
    if missing:
        print(f"no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("frontier_plot.py needs matplotlib: pip install matplotlib", file=sys.stderr)
        return 2
    figure, axes = plt.subplots(figsize=(7, 5))
    for name, values in points(args.results, args.label_suffix).items():
        clean, mean, notes = zip(*values, strict=True)
        style = "o-" if len(values) > 1 else "s"
        axes.plot(clean, mean, style, label=name)
        for x, y, note in values:
            if note:
                axes.annotate(note, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axes.set_xlabel("clean accuracy through the defence (%)")
    axes.set_ylabel("grey-box robust accuracy, mean over the attacks (%)")
    axes.set_title(args.title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
