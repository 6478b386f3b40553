"""The table and the figure of docs/studies/time_to_quality.sh, from what it left in its study directory:

  python docs/studies/time_to_quality.py runs/ttq cpu-hour seed > docs/studies/time_to_quality.md

Reads STUDY/step_time.json (the step time measured apart from the runs) and, for each recipe, STUDY/RECIPE/heldout-K.json
(`cli.py eval --json` of the checkpoint at iteration K) and STUDY/RECIPE/sample.txt; writes the markdown to stdout and
the figure, held-out bits per character against minutes of training, to docs/studies/time_to_quality.png."""
import json, re, sys
from pathlib import Path

TARGET = 1.25  # the seed's end after 21 hours, in bits per character (docs/recipes.md)

def points(rdir: Path) -> list[tuple[int, dict]]:
  """(iteration, eval result) of every held-out score of a run, by iteration."""
  out = [(int(m[1]), json.loads(p.read_text())) for p in rdir.glob("heldout-*.json") if (m := re.fullmatch(r"heldout-(\d+)\.json", p.name))]
  return sorted(out, key=lambda x: x[0])

def main(study: Path, recipes: list[str]) -> None:
  step = json.loads((study / "step_time.json").read_text())
  step_s = step["step_s"]
  runs = {r: points(study / r) for r in recipes}
  print("# Time to quality: held-out bits per character against minutes of training\n")
  print(f"Made by `bash docs/studies/time_to_quality.sh` (`docs/studies/time_to_quality.py {study} {' '.join(recipes)}`). "
        f"Minutes are iterations x the training step measured apart from the runs, {step_s:.3f} s (median of "
        f"{len(step['rounds'])} rounds of bench's training-step worker: " +
        ", ".join(f"{r['train_step_s']:.3f}" for r in step["rounds"]) + f" s; {step['rounds'][0]['device_name']}). "
        f"Held out: {next(iter(runs.values()))[0][1]['chars']:,} characters of stories no run or tokenizer saw.\n")
  print("| minutes | " + " | ".join(f"{r}: iteration | {r}: bits/char" for r in recipes) + " |")
  print("|---|" + "---|---|" * len(recipes))
  iters = sorted({k for pts in runs.values() for k, _ in pts})
  for k in iters:
    cells = []
    for r in recipes:
      got = dict(runs[r]).get(k)
      cells += [f"{k:,}", f"{got['bits_per_char']:.4f}"] if got else ["", ""]
    print(f"| {k * step_s / 60:.1f} | " + " | ".join(cells) + " |")
  print()
  for r in recipes:
    if (s := study / r / "sample.txt").exists():
      print(f"Sample of `{r}` at its last checkpoint (`sample --start='Once upon a time' --max_new_tokens=300 "
            f"--temperature=0.8 --top_k=20 --seed=1`):\n\n```\n{s.read_text().strip()}\n```\n")
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError: return print("(no figure: matplotlib is not installed)", file=sys.stderr)
  fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
  for r in recipes:
    ax.plot([k * step_s / 60 for k, _ in runs[r]], [p["bits_per_char"] for _, p in runs[r]], "o-", label=f"recipes/{r}.toml")
  ax.axhline(TARGET, color="grey", linestyle="--", linewidth=1, label=f"{TARGET} bits/char: the seed's end after 21 hours")
  ax.set(xlabel=f"minutes of training (iterations x {step_s:.2f} s)", ylabel="held-out bits per character",
         title="The seed's model from scratch on 2 CPU cores")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(Path(__file__).parent / "time_to_quality.png")

if __name__ == "__main__": main(Path(sys.argv[1]), sys.argv[2:])
