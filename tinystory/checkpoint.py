"""Runs and checkpoints: where runs are, a run's checkpoint (find, save, load), and the readers of its config.json
and metrics.jsonl. train, sample, export-log and plot all come here; nothing here imports tinygrad or the trainer.

A relative `--out_dir` (rundir.run_dir), and a run name given to sample, export-log or plot, is under `./runs` of the
working directory, as llama2.c's out_dir is relative to where it runs. A run's checkpoint is RUN_DIR/ckpt/:
model.safetensors (llama2.c's names, logical shapes), optimizer.safetensors (the AdamW moments, logical shapes) and
ckpt.json. Both tensor files are written with the safetensors package from numpy arrays (plain file writes, fsync,
atomic rename) and read with it.
"""
import contextlib, json, os, shutil
from pathlib import Path
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load, save
from tinystory import UserError, fsync_dir, write_error, write_file

CKPT = "ckpt"
GOOD = "ckpt.good"  # the last checkpoint that looked trained, while always_save_checkpoint saves ones that do not

# *** where runs are ***

def runs_dir() -> Path: return Path.cwd() / "runs"

def locate(path: str) -> Path:
  """`path` as given, or runs/PATH (as `train --out_dir=PATH` named it) when only that exists."""
  p = Path(path)
  return runs_dir() / p if not p.exists() and not p.is_absolute() and (runs_dir() / p).exists() else p

def find_run(path: str) -> Path:
  """RUN_DIR as given, or runs/RUN_DIR; it must hold config.json and train.log."""
  p = locate(path)
  if not p.is_dir(): raise UserError(f"run dir {path} does not exist (give a directory made by `python cli.py train`)")
  for f in ("config.json", "train.log"):
    if not (p / f).exists(): raise UserError(f"{path} is not a run dir: it has no {f} (expected a directory made by `python cli.py train`)")
  return p

def find_checkpoint(path: Path) -> Path:
  """The checkpoint dir for a run dir or a checkpoint dir, falling back to ckpt.prev after a crash mid-save (and to
  ckpt.good after one while a divergence put it back)."""
  for p in (path, path / CKPT, path / (CKPT + ".prev"), path / GOOD):
    if (p / "ckpt.json").is_file() and (p / "model.safetensors").is_file(): return p
  raise UserError(f"no checkpoint in {path}: expected {path / CKPT}/ckpt.json and model.safetensors "
                  "(a run saves one at its first eval after step 0 that improves val loss, or on Ctrl-C)")

def run_of(ck: Path) -> Path:
  """The run dir a checkpoint dir belongs to (a checkpoint dir given on its own is its own)."""
  return ck.parent if ck.name in (CKPT, CKPT + ".prev", GOOD) else ck

def resolve_checkpoint(path: str) -> Path:
  """The checkpoint dir for `sample --checkpoint`: a run dir, a checkpoint dir or a file in one, or a run name under
  runs/; "": the newest checkpoint under runs/."""
  if not path: return newest_checkpoint()
  p = locate(path)
  if not p.exists(): raise UserError(f"--checkpoint={path}: no such file or directory (give a run dir such as runs/out)")
  return find_checkpoint(p.parent if p.is_file() else p)

def newest_checkpoint() -> Path:
  found = []
  for d in sorted(runs_dir().iterdir()) if runs_dir().is_dir() else []:
    with contextlib.suppress(UserError): found.append(find_checkpoint(d))
  if not found:
    raise UserError(f"no checkpoint under {runs_dir()}: train a model first (python cli.py train ...) or pass --checkpoint")
  return max(found, key=lambda ck: (ck / "ckpt.json").stat().st_mtime)

# *** save and load ***

def unpadded(t, shape: tuple[int, ...]) -> np.ndarray:
  """A (padded) tinygrad tensor in its logical `shape`: read back whole and sliced in numpy, so no kernel runs."""
  return t.numpy()[tuple(slice(0, d) for d in shape)]

def model_weights(model) -> dict[str, np.ndarray]:
  """The model's weights by llama2.c's names, in logical shapes, as numpy (what model.safetensors holds)."""
  return {n: unpadded(model.weights[n], s) for n, s in model.shapes.items()}

def save_checkpoint(rdir: Path, weights: dict[str, np.ndarray], opt_state: dict[str, np.ndarray], meta: dict,
                    keep_old: bool = False) -> None:
  """Write rdir/ckpt atomically: a complete new directory is renamed into place; the old one is kept as ckpt.prev
  until the rename is done, so a crash at any point leaves one complete checkpoint (find_checkpoint looks at both),
  and then removed, or with `keep_old` kept as ckpt.good. A write error (disk full, read-only, permission) is a
  UserError naming the file and the cause: the previous checkpoint is left as it was and no ckpt.tmp stays behind."""
  dense = lambda arrays: save({n: np.ascontiguousarray(a) for n, a in arrays.items()})
  files = {"model.safetensors": dense(weights), "optimizer.safetensors": dense(opt_state),
           "ckpt.json": json.dumps(meta, indent=1).encode()}
  tmp, cur, prev = rdir / (CKPT + ".tmp"), rdir / CKPT, rdir / (CKPT + ".prev")
  path = tmp
  try:
    for p in (tmp, prev):  # a link planted under either name is removed, never followed
      if p.is_symlink(): p.unlink()
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, data in files.items(): write_file(path := tmp / name, data)
    fsync_dir(tmp)
    path = cur
    if cur.exists():
      shutil.rmtree(prev, ignore_errors=True)
      os.replace(cur, prev)
    os.replace(tmp, cur)
    fsync_dir(rdir)
  except OSError as e:
    shutil.rmtree(tmp, ignore_errors=True)
    if prev.exists() and not cur.exists():
      with contextlib.suppress(OSError): os.replace(prev, cur)
    raise write_error(path, e, "checkpoint not saved; the previous one, if any, is kept") from None
  if keep_old and prev.exists(): replace_dir(prev, rdir / GOOD)
  else: shutil.rmtree(prev, ignore_errors=True)

def replace_dir(src: Path, dst: Path) -> None:
  """Rename directory `src` to `dst`, replacing what `dst` was."""
  if dst.is_symlink(): dst.unlink()
  shutil.rmtree(dst, ignore_errors=True)
  os.replace(src, dst)

def load_checkpoint(path: Path, optimizer: bool = True) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
  """(ckpt.json, model weights, optimizer state) as numpy, from a run dir or a checkpoint dir. The fields every reader
  uses are checked here (model_args, iter_num, best_val_loss), and that the weights are finite. optimizer=False skips
  optimizer.safetensors ({} for it): only a resumed run needs the moments, so a damaged one never blocks sample, eval
  or export-model."""
  for attempt in range(2):
    ck = find_checkpoint(path)
    f = ck / "ckpt.json"
    try:
      meta = json.loads(f.read_text())
      weights, opt = (load((f := ck / n).read_bytes()) if read and (ck / n).is_file() else {}
                      for n, read in (("model.safetensors", True), ("optimizer.safetensors", optimizer)))
      break
    except FileNotFoundError:  # a trainer's save renamed ckpt to ckpt.prev meanwhile: look again, once
      if attempt: raise UserError(f"checkpoint {ck} vanished while being read (is a trainer saving into it?)") from None
    except (OSError, ValueError, SafetensorError) as e:
      raise UserError(f"checkpoint {f} is unreadable or corrupt: {e}") from None
  if not isinstance(meta, dict): raise UserError(f"checkpoint {ck / 'ckpt.json'} is not a JSON object")
  for k in ("model_args", "iter_num", "best_val_loss"):
    if k not in meta: raise UserError(f"checkpoint {ck / 'ckpt.json'} lacks {k!r}")
  check_field(meta, "model_args", dict, ck)
  check_field(meta, "iter_num", int, ck, lambda v: v >= 0)
  check_field(meta, "best_val_loss", float, ck)
  if bad := [n for n, w in weights.items() if not np.isfinite(w).all()]:
    raise UserError(f"checkpoint {ck}: {bad[0]} holds NaN or inf values (a diverged run saved by an older tinystory): "
                    f"resume or sample from an earlier checkpoint")
  return meta, weights, opt

def check_field(meta: dict, key: str, kind: type, ck: Path, ok=lambda v: True) -> None:
  """UserError unless ckpt.json's `key` is a `kind` (int for float too, never a bool) for which ok(value) holds."""
  v = meta.get(key)
  if isinstance(v, bool) or not isinstance(v, (int, float) if kind is float else kind) or not ok(v):
    raise UserError(f"checkpoint {ck / 'ckpt.json'}: {key}={json.dumps(v)[:60]} is not a valid {kind.__name__}")

# *** config.json and metrics.jsonl ***

def read_text(path: Path) -> str:
  try: return path.read_text(encoding="utf-8")
  except UnicodeDecodeError as e: raise UserError(f"cannot read {path}: not UTF-8 text (byte {e.start})") from None
  except OSError as e: raise UserError(f"cannot read {path}: {e.strerror}") from None

def read_config(rdir: Path) -> dict:
  """config.json as train writes it: options, model_args, data_meta, tokenizer, versions, commands (and num_params
  since it was recorded; older runs lack it)."""
  try: cfg = json.loads(read_text(rdir / "config.json"))
  except json.JSONDecodeError as e: raise UserError(f"{rdir / 'config.json'} is not valid JSON (line {e.lineno})") from None
  if not isinstance(cfg, dict): raise UserError(f"{rdir / 'config.json'} is not a JSON object: not a config written by `python cli.py train`")
  for k, kind in (("options", dict), ("model_args", dict), ("data_meta", dict), ("tokenizer", dict), ("versions", dict), ("commands", list)):
    if k not in cfg: raise UserError(f"{rdir / 'config.json'} lacks {k!r}: not a config written by `python cli.py train`")
    if not isinstance(cfg[k], kind): raise UserError(f"{rdir / 'config.json'}: {k} is {json.dumps(cfg[k])[:40]}, expected a JSON {'object' if kind is dict else 'array'}")
  if not cfg["commands"] or not all(isinstance(c, str) for c in cfg["commands"]):
    raise UserError(f"{rdir / 'config.json'} lists no training command (commands must be strings)")
  return cfg

def read_metrics(rdir: Path) -> tuple[list[dict], list[dict]]:
  """(iteration records, eval records) of metrics.jsonl, in file order. A torn last line (a killed run) is skipped."""
  path = rdir / "metrics.jsonl"
  if not path.exists(): raise UserError(f"{rdir} has no metrics.jsonl: not a run dir made by `python cli.py train`")
  text = read_text(path)
  iters, evals = [], []
  for n, line in enumerate(text.splitlines(), 1):
    try: rec = json.loads(line)
    except json.JSONDecodeError:
      if n == len(text.splitlines()) and not text.endswith("\n"): break
      raise UserError(f"{path} line {n} is not JSON") from None
    (evals if isinstance(rec, dict) and "val_loss" in rec else iters).append(check_record(rec, path, n))
  return iters, evals

ITER_FIELDS, EVAL_FIELDS = ("loss", "dt", "time"), ("val_loss", "train_loss")

def check_record(rec, path: Path, n: int) -> dict:
  """A metrics.jsonl record with the fields its readers use, of their types (plot, export-log); else a UserError."""
  is_num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
  is_int = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0
  ok = isinstance(rec, dict) and is_int(rec.get("iter")) and all(is_num(rec.get(k)) for k in
       (EVAL_FIELDS if "val_loss" in rec else ITER_FIELDS)) and ("val_loss" in rec or is_int(rec.get("tokens")))
  if not ok:
    raise UserError(f"{path} line {n} is not a record of train's (an object with an integer iter and, for an iteration, "
                    f"numbers {', '.join(ITER_FIELDS)} and integer tokens; for an eval, {', '.join(EVAL_FIELDS)}): {json.dumps(rec)[:60]}")
  return rec

def last_per_iter(records: list[dict]) -> list[dict]:
  """One record per iteration, the last one written (a resume from an earlier checkpoint repeats iterations)."""
  return sorted({r["iter"]: r for r in records}.values(), key=lambda r: r["iter"])
