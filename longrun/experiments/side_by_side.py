"""Every row of several `videopoet eval --json` reports side by side, as a Markdown table.

    python longrun/experiments/side_by_side.py NAME=REPORT.json [NAME=REPORT.json ...]

One column per report (its figure and 95% interval), one row per task, metric and split, the
``ref:`` rows (ground truth, tokenizer round trip) once from the first report, then the targets
(``evaluate.TARGETS``) with ``met`` or how far each report falls short. The reports must come from the
same scenes (``--scenes``, ``--samples``, ``--seed``); a mismatch is refused.
"""

import json
import sys

from videopoet.trainer.evaluate import EVAL_TASKS


def cell(agg: dict, key: str) -> str:
    value, ci = agg.get(key), agg.get("ci95", {}).get(key)
    if value is None:
        return "-"
    return f"{value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{value:.2f}"


def main(argv: list[str]) -> int:
    if not argv or any("=" not in a for a in argv):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    names, reports = [], []
    for arg in argv:
        name, path = arg.split("=", 1)
        with open(path) as f:
            names.append(name)
            reports.append(json.load(f))
    keys = [sorted((s["split"], s["key"], s["sample"]) for t in r["samples"].values() for s in t) for r in reports]
    if any(k != keys[0] for k in keys[1:]):
        print("side_by_side: the reports were not made on the same scenes and samples", file=sys.stderr)
        return 2
    first = reports[0]
    print("| task | metric | split | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for task in [t for t in EVAL_TASKS if t in first]:
        for metric in [k for k in first[task]["seen"] if k not in ("n", "ci95")]:
            for split in ("seen", "heldout"):
                cells = [cell(r[task][split], metric) if task in r else "-" for r in reports]
                print(f"| {task} | {metric} | {split} | " + " | ".join(cells) + " |")
    for ref, groups in first["reference"].items():
        for metric in [k for k in groups["seen"] if k not in ("n", "ci95")]:
            for split in ("seen", "heldout"):
                print(f"| ref:{ref} | {metric} | {split} | {cell(groups[split], metric)} |" + " |" * (len(names) - 1))
    for i, row in enumerate(first.get("targets", ())):
        verdicts = []
        for r in reports:
            t = r["targets"][i]
            verdicts.append(f"{t['value']:.2f}: " + ("met" if t["met"] else f"short by {t['short_by']:.2f}"))
        print(f"| target | {row['target']} | | " + " | ".join(verdicts) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
