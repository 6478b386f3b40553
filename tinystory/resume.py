"""The resume rules (docs/training.md, "Resume, Ctrl-C, divergence"): which checkpoint a resume continues and what
it must hold, the options it runs with (the run's saved ones, with those typed now on top, but never those that fix
the model's shape, its data or its random streams), its data and tokenizer, and whether it would only diverge again;
and the options a new run takes from a model file it starts from (--init_from=MODEL)."""
import dataclasses, json, os
from dataclasses import dataclass
from pathlib import Path
import numpy as np
from tinystory import UserError, pretok
from tinystory.checkpoint import CKPT, check_field, find_checkpoint, load_checkpoint
from tinystory.config import SHAPE_FIELDS, TrainConfig
from tinystory.data import source_list
from tinystory.loader import load_tokenizer, model_args_of, model_file_context
from tinystory.log import log
from tinystory.model import param_shapes

# options a resume cannot change: they fix the model's shape, its data and tokenizer, and its random streams (whose
# state the checkpoint restores); and this invocation's own, never taken from the saved ones
RESUME_FIXED = (*SHAPE_FIELDS, "data", "tokenizer", "vocab_source", "seed")
NOT_RESUMED = ("init_from", "out_dir", "overwrite")
PATH_OPTIONS = ("data", "tokenizer", "val_data")  # a path spelled otherwise names the same data (same_paths)

@dataclass
class Resume:
  meta: dict                      # ckpt.json
  weights: dict[str, np.ndarray]
  opt: dict[str, np.ndarray]
  options: dict                   # the options the checkpoint was trained with
  restored: Path | None           # ckpt.prev (or ckpt.good) was all there was, and was renamed back to ckpt

def load_resume(rdir: Path) -> Resume:
  """The checkpoint to resume and the options it was trained with, every field the trainer reads checked (one-line
  errors). A checkpoint left only as ckpt.prev (a save that died between its two renames) becomes ckpt again."""
  ck, restored = find_checkpoint(rdir), None
  if ck.name != CKPT and ck.parent == rdir:
    try: os.replace(ck, rdir / CKPT)
    except OSError as e: raise UserError(f"cannot restore {ck} as {rdir / CKPT}: {e.strerror or e}") from None
    ck, restored = rdir / CKPT, ck
  meta, weights, opt = load_checkpoint(ck, optimizer=True)
  args = model_args_of(ck, meta, weights)
  for key, kind in (("opt_step", int), ("shard_dir", str), ("data_state", dict), ("rng_state", dict)):
    if key not in meta: raise UserError(f"checkpoint {ck / 'ckpt.json'} lacks {key!r}: it cannot be resumed (it can be sampled)")
    check_field(meta, key, kind, ck)
  rng, u32 = meta["rng_state"], lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 32
  counter = lambda c: c is None or isinstance(c, list) and len(c) == 2 and all(map(u32, c))
  more = rng.get("more_counters", [])
  if not (u32(rng.get("seed")) and counter(rng.get("counter")) and isinstance(more, list) and all(map(counter, more))):
    raise UserError(f"checkpoint {ck / 'ckpt.json'}: rng_state {json.dumps(rng)[:60]} is not a seed and a counter of two uint32")
  for n, shape in param_shapes(args, args.vocab_size, args.hidden_size).items():
    for key in ("exp_avg." + n, "exp_avg_sq." + n):
      if key not in opt or opt[key].shape != shape:
        raise UserError(f"checkpoint {ck / 'optimizer.safetensors'}: {key} is missing or not of shape {list(shape)}")
  return Resume(meta, weights, opt, saved_options(ck, meta, rdir), restored)

def saved_options(ck: Path, meta: dict, rdir: Path) -> dict:
  """The TrainConfig fields the checkpoint was trained with (ckpt.json's config, else config.json's options), each
  checked to have its field's type; fields this version does not know are ignored, ones it lacks keep their defaults."""
  where, opts = ck / "ckpt.json", meta.get("config")
  if opts is None:
    where = rdir / "config.json"
    try: opts = json.loads(where.read_text()).get("options")
    except (OSError, ValueError, AttributeError): opts = None
  if not isinstance(opts, dict): raise UserError(f"checkpoint {ck / 'ckpt.json'} has no 'config' (and {where} no options): cannot resume")
  out = {}
  for f in dataclasses.fields(TrainConfig):
    if f.name not in opts or f.name in NOT_RESUMED: continue
    v, kind = opts[f.name], type(f.default)
    if isinstance(v, bool) != (kind is bool) or not isinstance(v, (int, float) if kind is float else kind):
      raise UserError(f"{where}: option {f.name}={json.dumps(v)[:40]} is not a {kind.__name__}")
    out[f.name] = float(v) if kind is float else v
  return out

def resumed_data(rdir: Path, resume: Resume) -> tuple[Path, Path, object]:
  """(shard dir, tokenizer file, tokenizer) of a resumed run: the shards it was trained on and its own copy of the
  tokenizer, which must be the one both were made with."""
  shard_dir, tok_path = Path(resume.meta["shard_dir"]), rdir / "tokenizer.tok"
  tok = load_tokenizer(tok_path)
  pretok.check_tokenizer_matches(pretok.load_meta(shard_dir), tok)
  if resume.meta.get("tokenizer_sha256") not in (None, tok.sha256):
    raise UserError(f"{tok_path} is not the tokenizer the checkpoint was trained with (sha256 differs): put that one back")
  return shard_dir, tok_path, tok

def resumed_config(cfg: TrainConfig, resume: Resume, overrides) -> tuple[TrainConfig, list[tuple[str, object, object]]]:
  """The run's saved options with the ones given on the command line (`overrides`) on top, and the changes as
  (name, saved, given). The shape of the model comes from the checkpoint: RESUME_FIXED options that differ are refused."""
  # the model's shape as the checkpoint has it; max_seq_len as trained (a model file's own may be longer)
  was = {**resume.options, **{k: v for k, v in resume.meta["model_args"].items() if k in RESUME_FIXED and k != "max_seq_len"}}
  # a path spelled otherwise (dir/ for dir, ./f for f) names the same data: the run's own spelling is kept
  given = {k: was[k] if k in PATH_OPTIONS and k in was and same_paths(was[k], v) else v for k, v in overrides}
  changes = [(k, was[k], v) for k, v in given.items()
             if k in was and k not in NOT_RESUMED and v != was[k] and not (k == "vocab_size" and v == 0)]
  if fixed := [c for c in changes if c[0] in RESUME_FIXED]:
    raise UserError("--init_from=resume cannot change " + ", ".join(f"--{k}={new} (the run's: {old})" for k, old, new in fixed) +
                    ": they fix the model's shape, its data or its random streams; drop them, or start a new run in another --out_dir")
  merged = dataclasses.replace(cfg, **{k: v for k, v in was.items() if (k not in given or given[k] == v) and hasattr(cfg, k)})
  merged.validate()
  return merged, changes

def same_paths(a, b) -> bool:
  """Whether two values of a comma-separated path option name the same sources: equal once normalised, or resolving
  to the same files from here."""
  if not (isinstance(a, str) and isinstance(b, str)): return a == b
  norm = lambda v, f: [("name", s) if s in ("char", "bpe", "synthetic") or s.startswith("synthetic:") else ("path", f(s))
                       for s in source_list(v)]
  return a == b or norm(a, os.path.normpath) == norm(b, os.path.normpath) or norm(a, os.path.realpath) == norm(b, os.path.realpath)

def read_run_config(path: Path) -> dict:
  """A resumed run's config.json, which it keeps adding to (its command history, the divergence record): damaged, it
  is refused rather than replaced, since replacing it would lose them for good."""
  why = None
  try: cfg = json.loads(path.read_text(encoding="utf-8"))
  except OSError as e: why = e.strerror or str(e)
  except (ValueError, UnicodeDecodeError) as e: why = f"not valid JSON: {e}"
  else:
    if not isinstance(cfg, dict) or not isinstance(cfg.get("commands"), list): why = "not a JSON object with the run's commands"
  if why:
    raise UserError(f"{path} is damaged ({why[:80]}): it holds the run's command history and divergence record, which "
                    f"resuming would lose; put a good copy back, or move it away to resume without them")
  return cfg

def check_diverged(run_config: dict, meta: dict, changes: list, cfg: TrainConfig) -> None:
  """A run that diverged after its checkpoint, resumed as it was, diverges again (resume is bit-exact): refused; with
  changed options, a note."""
  d = run_config.get("diverged")
  if not isinstance(d, dict) or not isinstance(d.get("iter"), int) or d["iter"] < meta["iter_num"]: return
  what = f"this run diverged at step {d['iter']} ({d.get('what')}) after its checkpoint of step {meta['iter_num']}"
  if changes: return log(f"note: {what}; resuming with changed options")
  raise UserError(f"{what}: resumed with the same options it diverges again, exactly (resume is bit-exact); "
                  f"change an option, e.g. {divergence_advice(cfg)}")

def divergence_advice(cfg: TrainConfig) -> str:
  return (f"a lower --learning_rate (now {cfg.learning_rate:g}; e.g. --learning_rate={cfg.learning_rate / 10:g})" +
          ("" if cfg.grad_clip else " or --grad_clip=1.0"))

def model_file_options(cfg: TrainConfig, given: dict) -> tuple[TrainConfig, dict]:
  """--init_from=MODEL (a llama2.c .bin or a Hugging Face directory): unless given, its own context length and its own
  tokenizer (tokenizer.bin beside the .bin, the directory's tokenizer.json), so that the data is tokenized as the
  model was trained; a longer --max_seq_len than the model's is refused (its RoPE and weights were never trained on one).
  Returns the options and what was taken from the model file."""
  ctx, vocab, own_tok = model_file_context(cfg.init_from)
  changes = {}
  if "max_seq_len" not in given and ctx > 0: changes["max_seq_len"] = ctx
  elif ctx > 0 and cfg.max_seq_len > ctx:
    raise UserError(f"--max_seq_len={cfg.max_seq_len} is longer than the context of {cfg.init_from} ({ctx}): give at most {ctx}")
  if "tokenizer" not in given and own_tok.is_file(): changes["tokenizer"] = str(own_tok)
  tok_file = changes.get("tokenizer", cfg.tokenizer)
  if vocab and tok_file not in ("char", "bpe") and (n := load_tokenizer(tok_file).vocab_size) != vocab:  # before the data
    raise UserError(f"tokenizer {tok_file} has {n} tokens but {cfg.init_from} has vocab_size={vocab}: pass its own tokenizer")
  if vocab and tok_file in ("char", "bpe") and not cfg.vocab_size: changes["vocab_size"] = vocab  # fitted to its size
  return dataclasses.replace(cfg, **changes), changes
