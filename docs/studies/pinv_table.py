"""The table of docs/pinv.md's "Does it help?", from the runs of docs/studies/pinv_vs_tied.sh: one row per vocabulary
and unembedding, each number the mean over the seeds (step times: over the timing rounds) with every value in
brackets. Markdown on stdout.

  python docs/studies/pinv_table.py runs/study > docs/studies/pinv_table.md"""
import json, sys
from collections import defaultdict
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tinystory.checkpoint import last_per_iter, load_checkpoint, read_config, read_metrics

def gram_cond(E: np.ndarray) -> float:
  """cond of the smaller Gram of E (EᵀE or EEᵀ) = cond(E)², in float64 (what the training log's gram_cond measures)."""
  s = np.linalg.svd(E.astype(np.float64), compute_uv=False)
  return float((s[0] / s[-1]) ** 2)

def measure(rdir: Path) -> dict:
  """The numbers of one finished run: held-out scores (cli.py eval's JSON), final val loss, the Gram's condition
  number at the first eval (pinv runs log it) and at the end (from the checkpoint), and its sample."""
  cfg, held = read_config(rdir), json.loads((rdir / "heldout.json").read_text())
  evals = last_per_iter(read_metrics(rdir)[1])
  meta, weights, _ = load_checkpoint(rdir, optimizer=False)
  V = cfg["model_args"]["vocab_size"]
  sample = (rdir / "sample.txt").read_text().strip().split("\n")
  return {"vocab": Path(cfg["options"]["tokenizer"]).stem, "V": V, "unembedding": cfg["options"]["unembedding"],
          "seed": cfg["options"]["seed"], "iters": meta["iter_num"], "nats": held["loss"], "bpc": held["bits_per_char"],
          "val": evals[-1]["val_loss"], "heldout_tokens": held["tokens"], "heldout_chars": held["chars"],
          "cond0": evals[0].get("gram_cond"),  # logged by pinv runs only
          "cond": gram_cond(weights["tok_embeddings.weight"][:V]), "sample": sample}

def spread(values: list[float], fmt: str) -> str:
  mean = sum(values) / len(values)
  return f"{mean:{fmt}} ({', '.join(f'{v:{fmt}}' for v in values)})" if len(values) > 1 else f"{mean:{fmt}}"

def step_times(study: Path) -> dict[tuple[str, str], list[float]]:
  """(vocab, unembedding) -> the training step's seconds in each timing round (step_times.jsonl, from bench's worker)."""
  out = defaultdict(list)
  path = study / "step_times.jsonl"
  for line in path.read_text().splitlines() if path.is_file() else []:
    r = json.loads(line)
    out[(r["vocab"], r["unembedding"])].append(r["step"]["train_step_s"])
  return out

BEYOND = {"pinv_scaled": " (beyond the seed)"}  # variants the seed did not have

def table(runs: list[dict], times: dict[tuple[str, str], list[float]]) -> str:
  rows = defaultdict(list)
  for r in sorted(runs, key=lambda r: r["seed"]): rows[(r["vocab"], r["unembedding"])].append(r)
  order = {"pinv": 0, "tied": 1, "untied": 2, "pinv_scaled": 3}
  out = ["| vocabulary | unembedding | seeds | held-out nats/token | held-out bits/char | val loss | ms/step (rounds) | cond(Gram) first eval → last |",
         "|---|---|--:|--:|--:|--:|--:|--:|"]
  for (vocab, u), rs in sorted(rows.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 9))):
    conds = ", ".join((f"{r['cond0']:.3g} → " if r["cond0"] else "") + f"{r['cond']:.3g}" for r in rs)
    out.append(f"| {vocab} (V={rs[0]['V']}) | {u + BEYOND.get(u, '')} | {len(rs)} | {spread([r['nats'] for r in rs], '.4f')} | "
               f"{spread([r['bpc'] for r in rs], '.4f')} | {spread([r['val'] for r in rs], '.4f')} | "
               f"{spread([1000 * t for t in times[(vocab, u)]], '.0f') if times.get((vocab, u)) else '-'} | {conds} |")
  if pending := sorted({v for v, _ in times} - {v for v, _ in rows}):  # timed, but no finished run yet
    out += ["", "Step times of vocabularies without finished runs: " + "; ".join(
      f"{v}: " + ", ".join(f"{u} {spread([1000 * t for t in times[(v, u)]], '.0f')} ms" for u in order if times.get((v, u)))
      for v in pending) + "."]
  iters = sorted({r["iters"] for r in runs})
  held = sorted({(r["vocab"], r["heldout_tokens"], r["heldout_chars"]) for r in runs})
  out += ["", f"Iterations per run: {', '.join(map(str, iters))}. Held-out text: "
          + "; ".join(f"{v}: {t:,} tokens predicted ({c:,} characters)" for v, t, c in held) + "."]
  out += ["", "Samples (seed 1, temperature 0.8, top-k 20, prompt 'Once upon a time'), of each variant's first seed:", ""]
  for (vocab, u), rs in sorted(rows.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 9))):
    text = " ".join(line for line in rs[0]["sample"] if line.strip())[:300]
    out += [f"- **{vocab}, {u}{BEYOND.get(u, '')}**: {text}"]
  return "\n".join(out) + "\n"

if __name__ == "__main__":
  study = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/study")
  done = [measure(d) for d in sorted(study.iterdir()) if (d / "heldout.json").is_file()]
  if not done: sys.exit(f"{study} holds no finished run (a run dir with heldout.json): run docs/studies/pinv_vs_tied.sh")
  print(table(done, step_times(study)), end="")
