"""What a training run writes into its run directory as it goes, besides train.log: metrics.jsonl (a record per
iteration and per eval), its checkpoints with the bookkeeping a divergence needs (the last one saved, and the last one
that looked trained), and config.json's record of a divergence (docs/training.md, "Resume, Ctrl-C, divergence")."""
import json, math, os, shutil
from pathlib import Path
import numpy as np
from tinystory import UserError, open_append, write_atomic, write_error
from tinystory.checkpoint import CKPT, GOOD, replace_dir, save_checkpoint
from tinystory.log import drop_torn_line, log

def looks_trained(val_loss: float, lowest_val_loss: float, unigram_loss: float) -> bool:
  """Whether a checkpoint saved at an eval of `val_loss` is one to go back to when the run diverges later: better than
  the tokens' own frequencies predict (the val data's unigram entropy) and within 1 nat of the run's lowest val loss.
  A diverging run's last finite checkpoints are typically neither: weights of ~1e8 that predict a nearly uniform
  distribution, or a loss far above the run's best."""
  return val_loss < unigram_loss and val_loss <= lowest_val_loss + 1.0

def checkpoint_record(ck: Path) -> dict | None:
  """{"iter", "val_loss", "dir"} of a checkpoint kept as ckpt.good, from its ckpt.json; None if there is none."""
  try: meta = json.loads((ck / "ckpt.json").read_text(encoding="utf-8"))
  except (OSError, ValueError): return None
  rec = {"iter": meta.get("iter_num"), "val_loss": meta.get("val_loss"), "dir": ck.name} if isinstance(meta, dict) else {}
  return rec if all(isinstance(rec.get(k), (int, float)) and not isinstance(rec.get(k), bool) for k in ("iter", "val_loss")) else None

class RunRecord:
  """The run directory `rdir` of a run under way (`name`: its --out_dir, for messages). `run_config` is config.json's
  content, `unigram` the val data's unigram loss (looks_trained), `advice` what a divergence says to change; a resumed
  run passes its checkpoint's ckpt.json as `resumed`."""
  def __init__(self, rdir: Path, name: str, run_config: dict, unigram: float, advice: str, resumed: dict | None = None):
    self.rdir, self.name, self.run_config, self.unigram, self.advice = rdir, name, run_config, unigram, advice
    self.metrics_path = rdir / "metrics.jsonl"
    drop_torn_line(self.metrics_path)  # a killed run's half-written record
    try: self.metrics = open_append(self.metrics_path)  # opened once: record() runs every iteration
    except OSError as e: raise write_error(self.metrics_path, e) from None
    # the checkpoints a divergence can send the user back to, as {"iter", "val_loss", "dir"}: the last saved, and the
    # last that looked trained (the same one, or kept as ckpt.good while always_save_checkpoint saves worse ones)
    self.saved = self.good = None
    self.lowest_val = math.inf  # the run's lowest val loss so far
    if resumed:
      self.saved = {"iter": resumed["iter_num"], "val_loss": resumed.get("val_loss", resumed["best_val_loss"]), "dir": CKPT}
      self.good = self.saved if resumed.get("looks_trained", True) else checkpoint_record(rdir / GOOD)
      self.lowest_val = resumed.get("lowest_val_loss", resumed["best_val_loss"])

  def record(self, **kw) -> None:
    """One line of metrics.jsonl."""
    try:
      self.metrics.write(json.dumps(kw) + "\n")
      self.metrics.flush()
    except OSError as e:
      self.close()  # the unwritten record is dropped, not retried at exit
      raise write_error(self.metrics_path, e) from None

  def close(self) -> None:
    try: self.metrics.close()
    except OSError: pass

  def save(self, weights: dict[str, np.ndarray], opt: dict[str, np.ndarray], meta: dict, val_loss: float) -> None:
    """Checkpoint the run (ckpt.json's `meta`, iter_num among it) as of an eval of `val_loss`; never a non-finite one."""
    if bad := next((n for n, a in {**weights, **opt}.items() if not np.isfinite(a).all()), None):
      self.diverge(f"{bad} is not finite", meta["iter_num"] - 1)  # never saved over a good checkpoint
    trained = looks_trained(val_loss, self.lowest_val, self.unigram)
    log(f"saving checkpoint to {self.name}")
    keep = not trained and self.good is not None and self.good is self.saved  # the last good one becomes ckpt.good
    save_checkpoint(self.rdir, weights, opt, {**meta, "val_loss": val_loss, "lowest_val_loss": self.lowest_val,
                                              "looks_trained": trained}, keep_old=keep)
    if trained: shutil.rmtree(self.rdir / GOOD, ignore_errors=True)
    elif keep: self.good = {**self.good, "dir": GOOD}
    self.saved = {"iter": meta["iter_num"], "val_loss": val_loss, "dir": CKPT}
    if trained: self.good = self.saved

  def diverge(self, what: str, step: int):
    """Stop a run whose loss or weights are no longer finite, recorded in config.json for a later resume, with the
    last checkpoint that looked trained (looks_trained) in ckpt/ to continue from."""
    rdir, good, saved = self.rdir, self.good, self.saved
    self.run_config["diverged"] = {"iter": step, "what": what}
    write_atomic(rdir / "config.json", json.dumps(self.run_config, indent=1))
    if good and good["dir"] == GOOD:  # always_save_checkpoint saved untrained-looking ones over it: it goes back
      replace_dir(rdir / CKPT, rdir / (CKPT + ".diverged"))
      os.replace(rdir / GOOD, rdir / CKPT)
      log(f"put the checkpoint of step {good['iter']} back in {rdir / CKPT}; the later one, of step {saved['iter']} "
          f"(val loss {saved['val_loss']:.4f}), is now {rdir / (CKPT + '.diverged')}")
    if good:
      where = (f"the last checkpoint that looked trained, step {good['iter']} (val loss {good['val_loss']:.4f}), is in "
               f"{rdir / CKPT}: continue it with --init_from=resume and")
    elif saved:
      where = (f"no checkpoint looks trained (the last, step {saved['iter']}, has val loss {saved['val_loss']:.4f}, no "
               f"better than the tokens' frequencies alone predict, {self.unigram:.4f}): start again with --overwrite=True and")
    else: where = "no checkpoint was saved: start again with"
    raise UserError(f"{what} at step {step}: training stopped; {where} {self.advice}")
