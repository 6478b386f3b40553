"""The run record (`export-log`): one plain-text file in the seed's layout, made from a run directory.

`### Running:` holds a sampling command and its output, sampled from the run's checkpoint at export time (or reused
from RUN_DIR/sample.txt, which every sampling export saves). `### Training:` holds each `train` command that wrote
the run, one option per line, followed by its part of train.log, excerpted: every line is kept except iteration lines,
of which only windows are kept (the first and last few of each invocation, and chosen iteration ranges); each run of
dropped lines becomes one `...` line. Kept lines are copied from train.log unchanged: nothing logged is recomputed.
Below the two sections, under its own heading, is a summary of the run (data, tokenizer, size, time, best val loss,
machine) with text sparklines of the loss, made from config.json, metrics.jsonl and the checkpoint.
"""
import json, logging, math, re, shlex
from pathlib import Path
from typing import Callable
from tinystory import UserError, write_atomic
from tinystory.checkpoint import find_checkpoint, find_run, last_per_iter, read_config, read_metrics, read_text
from tinystory.config import SampleConfig
from tinystory.log import fmt_duration, log, logger
from tinystory.rundir import training_pid
from tinystory.sample import sample as run_sampling

TOKENS_LINE = "tokens per iteration will be:"
OVERRIDING = ("Overriding: ", "Overriding config with ")  # an invocation's first lines: a recipe's, then each typed option
ITER_RE = re.compile(r"^(\d+) \| loss ")
EVAL_RE = re.compile(r"^step (\d+): train loss (\S+), val loss (\S+)$")
ELIDED = "..."
SAMPLE_FILE = "sample.txt"

# *** train.log: invocations, commands, excerpts ***

def invocations(lines: list[str]) -> list[list[str]]:
  """train.log split into the `train` invocations that wrote it: each begins with its `Overriding:` lines, then
  `tokens per iteration will be: ...`. Lines before the first invocation are dropped."""
  starts, prev = [], -1
  for i, line in enumerate(lines):
    if line.startswith(TOKENS_LINE):
      j = i
      while j - 1 > prev and lines[j - 1].startswith(OVERRIDING): j -= 1
      starts.append(j)
      prev = i
  return [lines[a:b] for a, b in zip(starts, starts[1:] + [len(lines)])]

def ran(invocation: list[str]) -> bool:
  """Whether an invocation got to its training loop (and so to config.json's `commands`); one that failed on its
  options or data stopped before its first eval or iteration line."""
  return any(EVAL_RE.match(l) or ITER_RE.match(l) for l in invocation)

def command_options(command: str) -> list[list[str]]:
  """The options of a `... train OPTIONS` command line: one list of words each, `--k=v` or `--k v`."""
  words = shlex.split(command)
  if "train" not in words: raise UserError(f"config.json: {command!r} is not a `train` command")
  opts, rest = [], words[words.index("train") + 1:]
  while rest:
    n = 2 if len(rest) > 1 and "=" not in rest[0] and rest[0].startswith("--") and not rest[1].startswith("--") else 1
    opts.append(rest[:n])
    rest = rest[n:]
  return opts

def command_lines(command: str, prompt: str) -> list[str]:
  """A `train` command as `python cli.py train`, one option per line (as typed), with ` \\` continuations."""
  lines = [f"{prompt} python cli.py train".lstrip()] + ["  " + shlex.join(o) for o in command_options(command)]
  return [l + " \\" for l in lines[:-1]] + lines[-1:]

def drop_extra_overrides(invocation: list[str], command: str) -> list[str]:
  """An invocation's lines without the Overriding lines of a failed attempt just before it (one that stopped on a bad
  --device, before its first other line): the command's own options are the last ones."""
  n_over = next(i for i, l in enumerate(invocation) if not l.startswith(OVERRIDING))
  keys = {o[0].split("=")[0].lstrip("-").replace("-", "_") for o in command_options(command)}
  return invocation[max(0, n_over - len(keys)):]

def parse_windows(specs: list[str]) -> list[tuple[int, int]]:
  """'700-710,53100-53105' (and repeats of the option) -> [(700, 710), (53100, 53105)], inclusive; 'N' is N-N."""
  out = []
  for spec in specs:
    for part in filter(None, spec.split(",")):
      m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
      if not m or (m[2] and int(m[2]) < int(m[1])):
        raise UserError(f"--windows {spec!r}: expected iteration ranges START-END (START <= END), comma-separated, e.g. 700-710")
      out.append((int(m[1]), int(m[2] or m[1])))
  return out

def excerpt(lines: list[str], head: int, tail: int, windows: list[tuple[int, int]]) -> list[str]:
  """The kept lines of one invocation: all but iteration lines, then the first `head` and last `tail` iteration
  lines and those whose iteration number is in a window; each run of dropped lines becomes one `...` line."""
  iters = [i for i, l in enumerate(lines) if ITER_RE.match(l)]
  keep = (set(range(len(lines))) - set(iters)) | set(iters[:head]) | set(iters[len(iters) - tail:] if tail else ())
  keep |= {i for i in iters if any(a <= int(ITER_RE.match(lines[i])[1]) <= b for a, b in windows)}
  out, dropped = [], False
  for i, line in enumerate(lines):
    if i not in keep: dropped = True; continue
    if dropped: out.append(ELIDED)
    out.append(line)
    dropped = False
  return out + [ELIDED] * dropped

def training_section(log_lines: list[str], commands: list[str], prompt: str, head: int, tail: int,
                     windows: list[tuple[int, int]]) -> list[str]:
  """Each invocation that ran, after its command (when config.json's commands pair up with them), excerpted."""
  runs = [inv for inv in invocations(log_lines) if ran(inv)]
  if not runs: raise UserError("train.log holds no training: no eval or iteration line after a `tokens per iteration` line")
  if len(runs) != len(commands):
    log(f"warning: train.log shows {len(runs)} invocations of train but config.json lists {len(commands)} commands: "
        "only the first invocation is shown with its command")
    commands = commands[:1]
  out = []
  for i, inv in enumerate(runs):
    if i < len(commands): out += command_lines(commands[i], prompt)
    out += excerpt(drop_extra_overrides(inv, commands[i]) if i < len(commands) else inv, head, tail, windows)
  return out

# *** the sample ***

class _Collect(logging.Handler):
  def __init__(self, chunks: list[str]):
    super().__init__()
    self.chunks = chunks
  def emit(self, record): self.chunks.append(record.getMessage() + "\n")

def shown_path(p: Path) -> str:
  """A path as it is typed where export-log runs, as the record's commands are (llama2.c's run from where the user
  is): relative to the working directory when inside it, else absolute."""
  p, cwd = p.resolve(), Path.cwd().resolve()
  return str(p.relative_to(cwd)) if p.is_relative_to(cwd) else str(p)

def sample_command(rdir: Path, overrides: list[tuple[str, object]]) -> tuple[str, list[tuple[str, object]]]:
  """(the `sample` command that reproduces the sample, its overrides in the order that command gives them)."""
  overrides = [("checkpoint", shown_path(rdir)), *overrides]
  return "python cli.py sample" + "".join(f" --{k}={shlex.quote(str(v))}" for k, v in overrides), overrides

def run_sample(rdir: Path, options: dict, overrides: list[tuple[str, object]], write: Callable[[str], None]) -> tuple[str, str]:
  """Sample from the run's checkpoint in-process: (the command, everything it prints: its log lines and the text, in
  order). `options` are SampleConfig fields besides checkpoint; `overrides` those given on the command line."""
  command, overrides = sample_command(rdir, overrides)
  chunks: list[str] = []
  def collect(text: str):
    chunks.append(text)
    write(text)
  handler = _Collect(chunks)
  logger.addHandler(handler)
  try: run_sampling(SampleConfig(**options, checkpoint=str(rdir.resolve())), overrides=overrides, write=collect)
  finally: logger.removeHandler(handler)
  return command, "".join(chunks)

def saved_sample(rdir: Path) -> tuple[str, str]:
  """(command, output) of RUN_DIR/sample.txt: its first line is the command, the rest what it printed."""
  path = rdir / SAMPLE_FILE
  if not path.exists():
    raise UserError(f"--no-sample: {path} does not exist; export once with --sample (the default) to sample and save one")
  if path.stat().st_mtime < (find_checkpoint(rdir) / "ckpt.json").stat().st_mtime:
    raise UserError(f"--no-sample: {path} is older than the run's checkpoint, so it is not a sample of it; export with --sample")
  command, _, output = read_text(path).partition("\n")
  if not command.startswith("python cli.py sample"): raise UserError(f"{path} does not start with a `python cli.py sample` command line")
  return command, output

# *** the summary ***

SPARKS = "▁▂▃▄▅▆▇█"

def sparkline(values: list[float], width: int = 60) -> str:
  """`values` as at most `width` block characters (means of equal runs of values), lowest ▁, highest █, on a log
  scale when all are positive (a loss falls fast, then slowly: linear would flatten all but the start)."""
  if not values: return ""
  cols = min(width, len(values))
  means = [sum(c) / len(c) for c in (values[len(values) * j // cols:len(values) * (j + 1) // cols] for j in range(cols))]
  if min(means) > 0: means = [math.log(m) for m in means]
  lo, hi = min(means), max(means)
  return "".join(SPARKS[round((m - lo) / (hi - lo) * (len(SPARKS) - 1)) if hi > lo else 0] for m in means)

def wall_time(records: list[dict]) -> float:
  """Seconds over every invocation: `time` counts from each invocation's start, so it drops when a new one begins."""
  total, last = 0.0, 0.0
  for r in records:
    if r["time"] < last: total += last
    last = r["time"]
  return total + last

def source_name(source: dict) -> str: return source["path"] if "path" in source else f"synthetic:{source['synthetic']}"

def check_summary_fields(rdir: Path, cfg: dict) -> None:
  """The fields of config.json the summary reads, checked before anything is sampled or written."""
  sources = cfg["data_meta"].get("sources")
  if not isinstance(sources, list) or not all(isinstance(x, dict) and "sha256" in x and ("path" in x or "synthetic" in x) for x in sources):
    raise UserError(f"{rdir / 'config.json'}: data_meta.sources is missing or malformed (each a path or synthetic, with its sha256)")
  if not all(k in cfg["tokenizer"] for k in ("kind", "vocab_size", "sha256")):
    raise UserError(f"{rdir / 'config.json'}: tokenizer lacks kind, vocab_size or sha256")
  read_metrics(rdir)

def summary_lines(rdir: Path, cfg: dict, sample_note: str) -> list[str]:
  """The record's own table of the run, `name  value` rows, from config.json, metrics.jsonl and the checkpoint."""
  all_iters, evals = read_metrics(rdir)
  iters, evals = last_per_iter(all_iters), last_per_iter(evals)
  o, v, tok = cfg["options"], cfg["versions"], cfg["tokenizer"]
  rows = [("data", f"{source_name(s)} sha256 {s['sha256']}") for s in cfg["data_meta"]["sources"]]
  rows.append(("tokenizer", f"{tok['kind']}, {tok['vocab_size']:,} tokens, sha256 {tok['sha256']}"))
  if r := cfg.get("recipe"):
    rows.append(("recipe", f"{r['path']} sha256 {r['sha256'][:16]}: " + (", ".join(f"{k}={v}" for k, v in r["options"].items()) or "empty")))
  if n := cfg.get("num_params"):  # runs from before config.json recorded it have no row
    d, nd = n["decayed"], n["non-decayed"]
    rows.append(("parameters", f"{d['parameters'] + nd['parameters']:,} ({d['parameters']:,} decayed in {d['tensors']} tensors"
                               f" + {nd['parameters']:,} non-decayed in {nd['tensors']} tensors)"))
  if iters:
    per_iter = o["gradient_accumulation_steps"] * o["batch_size"] * o["max_seq_len"]
    rows.append(("iterations", f"{iters[-1]['iter'] + 1:,} (0 to {iters[-1]['iter']:,}), {per_iter:,} tokens each"))
    rows.append(("tokens seen", f"{iters[-1]['tokens']:,}"))
  rows.append(("wall time", f"{fmt_duration(wall_time(all_iters))} (all invocations, evals included)"))
  best = min((r for r in evals if math.isfinite(r["val_loss"])), key=lambda r: r["val_loss"], default=None)
  if best: rows.append(("best val loss", f"{best['val_loss']:.4f} at step {best['iter']} (train loss {best['train_loss']:.4f})"))
  ck = find_checkpoint(rdir)
  rows.append(("checkpoint", f"{shown_path(ck)} (step {json.loads(read_text(ck / 'ckpt.json'))['iter_num']:,})"))
  rows.append(("sample", sample_note))
  rows.append(("machine", f"{v['machine']}; --device={o['device']} --dtype={o.get('dtype', 'float32')} --compile={o['compile']}"))
  rows.append(("versions", f"tinystory {v['tinystory']}, tinygrad {v['tinygrad']}, numpy {v['numpy']}, python {v['python']}"))
  if iters:
    losses = [r["loss"] for r in iters]
    rows.append(("train loss", f"{sparkline(losses)}  {losses[0]:.4f} -> {losses[-1]:.4f} over {len(losses):,} iterations"))
  if evals:
    vals = [r["val_loss"] for r in evals]
    rows.append(("val loss", f"{sparkline(vals)}  {vals[0]:.4f} -> {vals[-1]:.4f} over {len(vals):,} evals"))
  if (rdir / "loss.png").exists(): rows.append(("loss plot", shown_path(rdir / "loss.png")))
  w = max(len(k) for k, _ in rows)
  return [f"{k:<{w}}  {val}" for k, val in rows]

# *** the record ***

def dir_prompt(prompt: str) -> str:
  """The Training section's prompt: the Running one without its `user@host` word, as in the seed's record."""
  first, _, rest = prompt.partition(" ")
  return rest if "@" in first and rest else prompt

def export_log(run_dir: str, out: str | None, sample: bool, sample_options: dict, sample_overrides: list[tuple[str, object]],
               head: int, tail: int, windows: list[str], prompt: str, write: Callable[[str], None] = lambda s: None) -> Path:
  """Write the record of the run in `run_dir` to `out` (default RUN_DIR/train-<run name>.sh) and return its path.
  sample=True samples now with `sample_options` (SampleConfig fields; `sample_overrides` are those given, in order),
  streaming the text through `write`, and saves it as RUN_DIR/sample.txt; sample=False reuses that file."""
  rdir = find_run(run_dir)
  if (pid := training_pid(rdir)) is not None:  # its log, metrics and checkpoint would not agree with one another
    raise UserError(f"{rdir} is still training (pid {pid}): export it when that run ends (Ctrl-C in it saves a checkpoint and stops)")
  cfg, log_lines = read_config(rdir), read_text(rdir / "train.log").splitlines()
  check_summary_fields(rdir, cfg)
  find_checkpoint(rdir)  # before anything slow: a run with no checkpoint yet has nothing to sample or show
  out_path = Path(out) if out else rdir / f"train-{rdir.resolve().name}.sh"
  if not out_path.parent.is_dir(): raise UserError(f"--out {out}: directory {out_path.parent} does not exist")
  training = training_section(log_lines, cfg["commands"], dir_prompt(prompt), head, tail, parse_windows(windows))
  if sample:
    command, output = run_sample(rdir, sample_options, sample_overrides, write)
    write_atomic(rdir / SAMPLE_FILE, command + "\n" + output)
    note = f"made by the command above at export time; saved as {shown_path(rdir / SAMPLE_FILE)}"
  else:
    command, output = saved_sample(rdir)
    log(f"using the sample saved in {rdir / SAMPLE_FILE}")
    note = f"reused from {shown_path(rdir / SAMPLE_FILE)} (made by the command above at an earlier export)"
  text = ("### Running:\n\n" + f"{prompt} {command}".lstrip() + f"\n{output}" + ("" if output.endswith("\n") else "\n") +
          "\n### Training:\n\n" + "\n".join(training) + "\n\n\n" +
          "### Run summary (added by `python cli.py export-log`; not output of the commands above)\n\n" +
          "\n".join(summary_lines(rdir, cfg, note)) + "\n")
  write_atomic(out_path, text)
  return out_path
