"""Round 2's rule (PILOTS.md) from the frontier's seed means: conv@R2's strengths against the bundled row; run from
the root."""

import json

from impure.evaluation import choice_reason, choose_by_seed_means

rows = json.load(open("benchmarks/results/conv-cifar10/pilot2-frontier/seed-means.json"))["rows"]
contestants = [row for row in rows if row["defence"] != "none"]
chosen, competing = choose_by_seed_means(contestants)
print(f"- **{chosen['defence']}** is chosen ({choice_reason(chosen, competing)}); rows: "
      + "; ".join(f"{row['defence']} {100 * row['clean']['mean']:.1f} % clean / "
                  f"{100 * row['mean']['mean']:.1f} % grey-box mean" for row in contestants))
