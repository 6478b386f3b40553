"""Loss curves as a PNG, from metrics.jsonl, on a log loss axis. One run: train loss per iteration (raw, faint, and a
trailing mean) and val loss at each eval. Several runs: one colour each, the raw train loss faint under a smoothing
without lag, val loss as points, each labelled by its name and the options that differ between the runs.
matplotlib is an optional extra (`pip install '.[plot]'`)."""
import io
import numpy as np
from pathlib import Path
from tinystory import UserError, write_atomic
from tinystory.checkpoint import find_run, last_per_iter, read_config, read_metrics, runs_dir
from tinystory.log import log
from tinystory.rundir import training_pid

X_AXES = {"iter": "iteration", "tokens": "tokens trained on", "seconds": "wall time (s)", "minutes": "wall time (minutes)"}
# options that name a run rather than describe it: never a reason to tell two runs apart in a legend
NOT_A_DIFFERENCE = ("out_dir", "init_from", "overwrite", "wandb_log", "wandb_project", "wandb_run_name", "log_interval")

def smooth(values: list[float], window: int) -> list[float]:
  """Trailing mean over the last `window` values (fewer at the start)."""
  out, total = [], 0.0
  for i, v in enumerate(values):
    total += v - (values[i - window] if i >= window else 0.0)
    out.append(total / min(i + 1, window))
  return out

def smooth_centred(values: list[float], half: int) -> list[float]:
  """Least-squares line through the values within `half` points either side, evaluated at the point: the centred
  moving average wherever the window fits, a one-sided line fit near the ends. A straight line comes out unchanged
  everywhere, the last points included, so a falling loss is not drawn later (or higher) than it fell, as a trailing
  mean or an exponential moving average draws it."""
  y, n = np.asarray(values, dtype=np.float64), len(values)
  i = np.arange(n, dtype=np.float64)
  lo, hi = np.maximum(np.arange(n) - half, 0), np.minimum(np.arange(n) + half + 1, n)
  window_sum = lambda a: (c := np.concatenate([[0.0], np.cumsum(a)]))[hi] - c[lo]
  s0, sx, sy, sxx, sxy = (window_sum(a) for a in (np.ones(n), i, y, i * i, i * y))
  spread = s0 * sxx - sx * sx  # s0² x the variance of the window's positions: 0 for a one-point window
  slope = np.divide(s0 * sxy - sx * sy, spread, out=np.zeros(n), where=spread > 0)
  return (sy / np.maximum(s0, 1) + slope * (i - sx / np.maximum(s0, 1))).tolist()

def run_curves(rdir: Path, x: str) -> dict:
  """The run's train loss and val loss against the `x` axis (iter | tokens | seconds | minutes). Tokens are those
  trained on before the loss was measured; seconds (minutes) add up the wall time of the iterations before it
  (compiles and evals included), across resumes."""
  iters, evals = (last_per_iter(r) for r in read_metrics(rdir))
  if not iters and not evals: raise UserError(f"{rdir / 'metrics.jsonl'} has no iterations or evals yet: nothing to plot")
  if x == "tokens":
    o = read_config(rdir)["options"]
    per_iter = o["batch_size"] * o["max_seq_len"] * o["gradient_accumulation_steps"]
    at = lambda it: it * per_iter
  elif x in ("seconds", "minutes"):
    done, total, unit = {}, 0.0, 60.0 if x == "minutes" else 1.0  # done[i]: wall time when iteration i began
    for r in iters: done[r["iter"]], total = total / unit, total + r["dt"]
    at = lambda it: done.get(it, total / unit)
  else: at = lambda it: it
  return {"x": [at(r["iter"]) for r in iters], "loss": [r["loss"] for r in iters],
          "val_x": [at(r["iter"]) for r in evals], "val_loss": [r["val_loss"] for r in evals],
          "last": max(r["iter"] for r in iters + evals)}

def run_labels(rdirs: list[Path]) -> list[str]:
  """Each run's name followed by its values of the options that differ between the runs (file options by file name;
  the model's shape as resolved, so vocab_size=0, the tokenizer's size, equals that size spelled out)."""
  opts = [{**c["options"], **c.get("model_args", {})} for c in map(read_config, rdirs)]
  keys = sorted({k for o in opts for k in o if k not in NOT_A_DIFFERENCE and len({repr(p.get(k)) for p in opts}) > 1})
  show = lambda v: Path(v).name if isinstance(v, str) and "/" in v else v
  return [r.resolve().name + (" (" + ", ".join(f"{k}={show(o.get(k))}" for k in keys) + ")" if keys else "")
          for r, o in zip(rdirs, opts)]

def plot_runs(run_dirs: list[str], out: str | None = None, logx: bool = False, x: str = "iter") -> Path:
  """Write the loss curves of the runs to `out` (default: RUN_DIR/loss.png for one run, runs/compare.png for several),
  atomically, and return its path."""
  try:
    import matplotlib
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
  except ImportError:
    raise UserError("plot needs matplotlib, an optional extra: pip install '.[plot]' (or: pip install matplotlib)") from None
  rdirs = [find_run(r) for r in run_dirs]
  if len({r.resolve() for r in rdirs}) < len(rdirs): raise UserError("plot: a run is given twice")
  curves = [run_curves(r, x) for r in rdirs]
  for r, c in zip(rdirs, curves):
    if (pid := training_pid(r)) is not None:
      log(f"note: {r} is still training (pid {pid}): the plot is a snapshot, up to iteration {c['last']}")
  out_path = Path(out) if out else rdirs[0] / "loss.png" if len(rdirs) == 1 else runs_dir() / "compare.png"
  fig, ax = plt.subplots(figsize=(8, 4.5) if len(rdirs) == 1 else (10, 6), dpi=120)
  if len(rdirs) == 1:
    c = curves[0]
    window = max(1, len(c["loss"]) // 50)
    ax.plot(c["x"], c["loss"], color="tab:blue", alpha=0.25, linewidth=0.8, label="train loss")
    if window > 1: ax.plot(c["x"], smooth(c["loss"], window), color="tab:blue", linewidth=1.6, label=f"train loss, mean of {window}")
    if c["val_x"]: ax.plot(c["val_x"], c["val_loss"], "o-", color="tab:orange", label="val loss")
    title = f"{rdirs[0].resolve().name}: loss"
  else:
    colors = plt.get_cmap("tab10" if len(rdirs) <= 10 else "tab20").colors
    for i, (c, label) in enumerate(zip(curves, run_labels(rdirs))):
      color = colors[i % len(colors)]
      ax.plot(c["x"], c["loss"], color=color, alpha=0.15, linewidth=0.6)
      if c["loss"]: ax.plot(c["x"], smooth_centred(c["loss"], len(c["loss"]) // 100), color=color, linewidth=1.4, label=label)
      if c["val_x"]: ax.plot(c["val_x"], c["val_loss"], "o", color=color, markersize=4, markeredgecolor="black", markeredgewidth=0.5)
    ax.plot([], [], "o", color="grey", markeredgecolor="black", markeredgewidth=0.5, label="val loss at evals")
    title = f"loss of {len(rdirs)} runs (lines: train loss, centred mean over the faint raw curve)"
  ax.set_yscale("log")  # a loss falls fast, then slowly: on a linear axis the start flattens the rest
  for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter): axis(lambda v, _: f"{v:g}")  # 3, not 3x10^0
  if logx: ax.set_xscale("symlog", linthresh=1)  # symlog: iteration 0 has a place
  ax.set(xlabel=X_AXES[x], ylabel="loss (nats per token)", title=title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize="small" if len(rdirs) > 1 else None)
  fig.tight_layout()
  png = io.BytesIO()
  try: fig.savefig(png, format="png")
  finally: plt.close(fig)
  write_atomic(out_path, png.getvalue())
  return out_path
