"""The loss curve of a run as a PNG: train loss per iteration (raw, faint, and smoothed) and val loss at each eval,
from metrics.jsonl, on a log loss axis. matplotlib is an optional extra (`pip install '.[plot]'`)."""
import io
from pathlib import Path
from tinystory import UserError, write_atomic
from tinystory.checkpoint import find_run, last_per_iter, read_metrics, training_pid
from tinystory.log import log

def smooth(values: list[float], window: int) -> list[float]:
  """Trailing mean over the last `window` values (fewer at the start)."""
  out, total = [], 0.0
  for i, v in enumerate(values):
    total += v - (values[i - window] if i >= window else 0.0)
    out.append(total / min(i + 1, window))
  return out

def plot_loss(run_dir: str, out: str | None = None, logx: bool = False) -> Path:
  """Write the run's loss curve to `out` (default RUN_DIR/loss.png), atomically, and return its path."""
  try:
    import matplotlib
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
  except ImportError:
    raise UserError("plot needs matplotlib, an optional extra: pip install '.[plot]' (or: pip install matplotlib)") from None
  rdir = find_run(run_dir)
  iters, evals = (last_per_iter(r) for r in read_metrics(rdir))
  if not iters and not evals: raise UserError(f"{rdir / 'metrics.jsonl'} has no iterations or evals yet: nothing to plot")
  if (pid := training_pid(rdir)) is not None:
    log(f"note: {rdir} is still training (pid {pid}): the plot is a snapshot, up to iteration {max(r['iter'] for r in iters + evals)}")
  out_path = Path(out) if out else rdir / "loss.png"
  x, loss = [r["iter"] for r in iters], [r["loss"] for r in iters]
  window = max(1, len(loss) // 50)
  fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
  ax.plot(x, loss, color="tab:blue", alpha=0.25, linewidth=0.8, label="train loss")
  if window > 1: ax.plot(x, smooth(loss, window), color="tab:blue", linewidth=1.6, label=f"train loss, mean of {window}")
  if evals: ax.plot([r["iter"] for r in evals], [r["val_loss"] for r in evals], "o-", color="tab:orange", label="val loss")
  ax.set_yscale("log")  # a loss falls fast, then slowly: on a linear axis the start flattens the rest
  for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter): axis(lambda v, _: f"{v:g}")  # 3, not 3x10^0
  if logx: ax.set_xscale("symlog", linthresh=1)  # symlog: iteration 0 has a place
  ax.set(xlabel="iteration", ylabel="loss", title=f"{rdir.resolve().name}: loss")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  png = io.BytesIO()
  try: fig.savefig(png, format="png")
  finally: plt.close(fig)
  write_atomic(out_path, png.getvalue())
  return out_path
