"""A claim's tested effects against the training budget: the diagnosis of a claim that does not PASS.

The same claim, checked on sweeps that differ in budget (epochs, training examples) or in how far they
push the setting the claim varies, gives one point per sweep and tested difference: the effect's mean with
its 95% interval, and the margin it must clear. Read it as: does the effect move towards passing as the
budget grows, and does it get there?
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from harness.report import style
from harness.report.claims import check_claims


def claim_effects(store: Path, claim_id: str, sweeps: list[str]) -> pl.DataFrame:
    """One row per (sweep, tested difference) of `claim_id` on each of `sweeps`, in their order: sweep,
    data (the budget in words), verdict of the claim, what, estimate, low, high, asserts, margin, verdict of
    the test. Sweeps where the claim does not apply give no rows."""
    rows = []
    for sweep in sweeps:
        for result in check_claims(store, sweeps=[sweep]):
            if result.claim_id != claim_id:
                continue
            rows += [{"sweep": sweep, "data": result.data, "claim_verdict": result.verdict,
                      **{k: effect[k] for k in ("what", "estimate", "low", "high", "asserts", "margin")},
                      "test_verdict": effect["verdict"]} for effect in result.effects]
    schema = {"sweep": pl.String, "data": pl.String, "claim_verdict": pl.String, "what": pl.String,
              "estimate": pl.Float64, "low": pl.Float64, "high": pl.Float64, "asserts": pl.String,
              "margin": pl.Float64, "test_verdict": pl.String}
    return pl.DataFrame(rows, schema=schema)


@style.house_style
def budget_figure(store: Path, claim_id: str, sweeps: list[str], labels: list[str], out: Path) -> list[Path]:
    """One panel per tested difference of `claim_id`: its effect with the 95% interval on each sweep (x:
    `labels`, the budgets in words, in rising order) and the margin as a dashed line. Writes
    OUT/diagnosis-CLAIM.{png,csv}; returns the paths (none where the claim applies to no sweep)."""
    import matplotlib.pyplot as plt

    frame = claim_effects(store, claim_id, sweeps)
    if frame.is_empty():
        return []
    label_of = dict(zip(sweeps, labels, strict=True))
    frame = frame.with_columns(pl.col("sweep").replace_strict(label_of).alias("budget"))
    # a test's name may carry the sweep's own numbers (the largest beta): panels group by the words before them
    frame = frame.with_columns(pl.col("what").str.replace_all(r"[-+]?\d+(\.\d+)?", "#").alias("test"))
    tests = frame["test"].unique(maintain_order=True).to_list()
    drawing = style.plot(1, len(tests), panel=(4.4, 3.4), title=f"{claim_id} against the budget")
    fig = drawing.fig
    for ax, test in zip(drawing.axes[0], tests, strict=True):
        part = frame.filter(pl.col("test") == test)
        x = [labels.index(b) for b in part["budget"].to_list()]
        low = [e - lo if lo is not None else 0.0 for e, lo in zip(part["estimate"], part["low"], strict=True)]
        high = [hi - e if hi is not None else 0.0 for e, hi in zip(part["estimate"], part["high"], strict=True)]
        ax.errorbar(x, part["estimate"].to_list(), yerr=[low, high], fmt="o-", capsize=4)
        ax.axhline(part["margin"][0], linestyle="--", color="grey",
                   label=f"must be {part['asserts'][0]} {part['margin'][0]:g}")
        ax.set_xticks(range(len(labels)), labels, fontsize="small")
        ax.set_title(part["what"][0], fontsize="small", wrap=True)
        ax.set_ylabel("effect: mean and 95% t interval over seeds", fontsize="small")
        ax.legend(fontsize="small")
    out.mkdir(parents=True, exist_ok=True)
    png, csv = out / f"diagnosis-{claim_id}.png", out / f"diagnosis-{claim_id}.csv"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    frame.drop("test").write_csv(csv)
    return [png, csv]


def main(argv: list[str] | None = None) -> None:
    """python -m harness.report.budget STORE OUT DIAGNOSES.json: DIAGNOSES maps a claim id to a list of
    [sweep, label] pairs in rising budget; draws each claim's figure."""
    import sys

    store, out, spec = (argv if argv is not None else sys.argv[1:])
    for claim_id, pairs in json.loads(Path(spec).read_text()).items():
        paths = budget_figure(Path(store), claim_id, [p[0] for p in pairs], [p[1] for p in pairs], Path(out))
        print(f"{claim_id}: " + (", ".join(str(p) for p in paths) if paths else "no sweep it applies to"))


if __name__ == "__main__":
    main()
