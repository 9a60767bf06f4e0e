"""Round 1's rule (PILOTS.md) applied to its two comparisons, from the frontier's seed means; run from the root."""

import json

from impure.evaluation import choice_reason, choose_by_seed_means

rows = json.load(open("benchmarks/results/conv-cifar10/pilot1-frontier/seed-means.json"))["rows"]
lines = []
for title, names in (("equal CPU time", ("conv@T", "vit@T")), ("equal images seen", ("conv@N", "vit@T"))):
    subset = [row for row in rows if row["defence"].split(" ")[0] in names]
    chosen, competing = choose_by_seed_means(subset)
    lines.append(f"- {title}: **{chosen['defence']}** is chosen ({choice_reason(chosen, competing)}); rows: "
                 + "; ".join(f"{row['defence']} {100 * row['clean']['mean']:.1f} % clean / "
                             f"{100 * row['mean']['mean']:.1f} % grey-box mean" for row in subset))
print("\n".join(lines))
