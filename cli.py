#!/usr/bin/env python3
"""tinystory's command line: parses options and calls the package (`python cli.py --help`)."""
import ast, contextlib, json, signal, sys, time
from dataclasses import fields
import click
from tinystory import UserError
from tinystory.config import EvalConfig, SampleConfig, TrainConfig
from tinystory.log import log, log_to_console
from tinystory.recipe import apply_recipe, load_recipe

class Group(click.Group):
  """A click group that turns a UserError from the package into a one-line `Error: ...` and exit status 1."""
  group_class = type
  def main(self, args=None, *a, **kw):
    # keep the command line as typed (e.g. for a run's config.json); click's test runner passes args, not sys.argv
    args = list(sys.argv[1:] if args is None else args)
    return super().main(args, *a, obj={"argv": args}, **kw)
  def invoke(self, ctx):
    try: return super().invoke(ctx)
    except UserError as e: raise click.ClickException(str(e)) from None

@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
def cli():
  """Train tiny LLaMA-style story models from scratch on a CPU, sample from them, and export the run."""
  log_to_console()

# ---- helpers of the commands below (each command imports its own module: `--help` loads no tinygrad) ----

def progress_bar(stack, label: str, file=None):
  """A `progress(done, total)` callback that draws a click progress bar (on `file`, default stdout), opened on the
  first call (when the total is known) and closed with `stack`. An unknown total (None) draws a bar with no length."""
  bars = []
  def progress(done, total):
    if not bars: bars.append(stack.enter_context(click.progressbar(length=total, label=label, file=file)))
    bars[0].update(done - bars[0].pos)
  return progress

def llama2c_options(config_fields):
  """One click option per config dataclass field, its help the field's (tinystory.option), spelled both `--batch_size`
  and `--batch-size` (llama2.c's configurator takes the former, `--batch_size=64`); booleans take a value
  (`--compile=False`). The options given on the command line are collected in ctx.meta['overrides'] in the order they
  were typed (click processes parameters in invocation order)."""
  def remember(ctx, param, value):
    if ctx.get_parameter_source(param.name) == click.core.ParameterSource.COMMANDLINE:
      ctx.meta.setdefault("overrides", []).append((param.name, value))
    return value
  def decorate(f):
    for fd in reversed(config_fields):
      names = [f"--{fd.name}"] + ([f"--{fd.name.replace('_', '-')}"] if "_" in fd.name else [])
      ptype = click.BOOL if fd.type is bool else fd.type
      f = click.option(*names, fd.name, type=ptype, default=fd.default, show_default=True, help=fd.metadata["help"],
                       callback=remember)(f)
    return f
  return decorate

data_sources = click.option("--data", "sources", multiple=True, required=True,
                            help="Story file, directory, glob, or 'synthetic[:N]'; repeat for several.")
encoding_errors = click.option("--encoding-errors", type=click.Choice(["strict", "replace"]), default="strict",
                               show_default=True, help="What to do with bytes that are not UTF-8 in the data.")
def tokenizer_file(name: str):
  return click.option("--tokenizer", name, type=click.Path(dir_okay=False), required=True,
                      help="Tokenizer file: a .tok, a llama2.c tokenizer.bin or an exported tokenizer.json.")

def write_stdout(text: str) -> None:
  """Streamed output (sampled text): written at once, not when the line or the buffer is full."""
  sys.stdout.write(text)
  sys.stdout.flush()

# ---- tokenizer ----

SAMPLE_SENTENCE = "Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine."

@cli.group()
def tokenizer():
  """Fit a char or byte-level BPE tokenizer (.tok file), inspect it, encode and decode with it."""

@tokenizer.command("fit")
@data_sources
@click.option("--kind", type=click.Choice(["char", "bpe"]), required=True,
              help="char: one token per character; bpe: byte-level BPE.")
@click.option("--vocab-size", type=int, help="Tokens including <unk>, <s>, </s>. char: default every distinct "
              "character; bpe: required, at least 259 (3 specials + 256 bytes + merges). At most 65535.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Tokenizer file to write (.tok).")
@encoding_errors
def tokenizer_fit(sources, kind, vocab_size, out, encoding_errors):
  """Learn a tokenizer from the stories in --data and write it to --out."""
  from tinystory.data import iter_stories
  from tinystory.tokenizer import fit_tokenizer
  seen = {"stories": 0, "chars": 0}
  def counted(stories):
    for s in stories:
      seen["stories"] += 1; seen["chars"] += len(s)
      yield s
  t0 = time.perf_counter()
  with contextlib.ExitStack() as stack:
    tok = fit_tokenizer(counted(iter_stories(list(sources), errors=encoding_errors)), kind, vocab_size,
                        progress=progress_bar(stack, "bpe merges"))
  tok.save(out)
  log(f"{kind} tokenizer: {tok.vocab_size} tokens from {seen['stories']:,} stories ({seen['chars']:,} chars) "
      f"in {time.perf_counter() - t0:.1f}s -> {out} (sha256 {tok.sha256[:16]})")

@tokenizer.command("info")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--text", help="Text to measure characters per token on (default: a built-in sentence).")
@click.option("--text-file", type=click.Path(dir_okay=False), help="UTF-8 file to measure characters per token on.")
def tokenizer_info(file, text, text_file):
  """Print a tokenizer's kind, vocab size, specials and characters per token."""
  from tinystory.loader import load_tokenizer
  from tinystory.tokenizer import SPECIALS, N_SPECIAL
  if text is not None and text_file is not None: raise UserError("give --text or --text-file, not both")
  tok, on = load_tokenizer(file), "the built-in sentence"
  if text_file is not None:
    try: text, on = open(text_file, encoding="utf-8").read(), text_file
    except OSError as e: raise UserError(f"cannot read --text-file {text_file}: {e.strerror}") from None
    except UnicodeDecodeError as e: raise UserError(f"--text-file {text_file} is not UTF-8 (byte {e.start})") from None
  elif text is not None: on = "--text"
  else: text = SAMPLE_SENTENCE
  if not (ids := tok.encode(text)): raise UserError(f"{on} is empty: no characters to measure")
  n = tok.vocab_size - N_SPECIAL
  click.echo(f"kind: {tok.kind}" + (" (a llama2.c tokenizer.bin, encoded as run.c does)" if tok.kind == "llama2c" else ""))
  parts = {"char": f"{n} characters", "bpe": f"256 bytes + {n - 256} merges",
           "llama2c": f"256 byte-fallback pieces + {n - 256} pieces" if getattr(tok, "byte_fallback", False) else f"{n} pieces"}
  click.echo(f"vocab_size: {tok.vocab_size} ({N_SPECIAL} specials + {parts[tok.kind]})")
  click.echo("specials: " + " ".join(f"{s}={i}" for s, i in SPECIALS.items()))
  if tok.pattern: click.echo(f"pattern: {tok.pattern}")
  click.echo(f"sha256: {tok.sha256}")
  click.echo(f"chars_per_token: {len(text) / len(ids):.3f} ({len(text):,} chars, {len(ids):,} tokens of {on})")

@tokenizer.command("encode")
@tokenizer_file("file")
@click.option("--bos", is_flag=True, help="Put the BOS id <s> first.")
@click.argument("text", required=False)
def tokenizer_encode(file, bos, text):
  """Print the token ids of TEXT (or of stdin, read whole), space-separated."""
  from tinystory.loader import load_tokenizer
  tok = load_tokenizer(file)
  click.echo(" ".join(map(str, tok.encode(sys.stdin.read() if text is None else text, bos=bos))))

@tokenizer.command("decode")
@tokenizer_file("file")
@click.argument("ids", nargs=-1)
def tokenizer_decode(file, ids):
  """Print the text of token IDS (or of the space-separated ids on stdin) and a newline."""
  from tinystory.loader import load_tokenizer
  tok = load_tokenizer(file)
  def token_id(word: str) -> int:  # the range is checked by decode
    try: return int(word)
    except ValueError: raise UserError(f"{word!r} is not a token id (expected integers 0..{tok.vocab_size - 1})") from None
  click.echo(tok.decode([token_id(w) for w in ids or sys.stdin.read().split()]))

# ---- data ----

@cli.group()
def data():
  """Download TinyStories and pretokenize stories into shards for training."""

@data.command("download")
@click.option("--cache-dir", envvar="TINYSTORY_DATA", default="data", show_default=True, show_envvar=True,
              type=click.Path(file_okay=False), help="Where the archive is saved and unpacked.")
def data_download(cache_dir):
  """Fetch TinyStories_all_data.tar.gz from the Hugging Face hub (resuming a partial download) and unpack it."""
  from tinystory.data import download
  with contextlib.ExitStack() as stack: download(cache_dir, progress=progress_bar(stack, "downloading"))

@data.command("prepare")
@data_sources
@tokenizer_file("tokenizer")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Directory for the shards and meta.json.")
@click.option("--val-fraction", type=float, default=0.02, show_default=True,
              help="Share of the stories (the first ones, at least one) in the validation shard, shard_0000.bin.")
@click.option("--shard-tokens", type=int, default=1 << 24, show_default=True,
              help="A new train shard is begun once one holds this many tokens.")
@encoding_errors
def data_prepare(sources, tokenizer, out, val_fraction, shard_tokens, encoding_errors):
  """Encode every story (BOS first, no EOS, as llama2.c) into uint16 shards; shard 0 is the validation split.
  Re-running with the same data, tokenizer and options reuses the shards."""
  from tinystory.pretok import prepare
  t0 = time.perf_counter()
  with contextlib.ExitStack() as stack:
    prepare(list(sources), tokenizer, out, val_fraction, shard_tokens, encoding_errors,
            progress=progress_bar(stack, "encoding stories"))
  log(f"data prepare took {time.perf_counter() - t0:.1f}s")

# ---- bench ----

def _config_pair(ctx, param, values):
  """--config NAME=VALUE (repeatable) -> dict of ModelArgs overrides, values parsed as Python literals."""
  out = {}
  for v in values:
    name, eq, val = v.partition("=")
    if not eq: raise click.BadParameter(f"{v!r}: expected NAME=VALUE, e.g. dim=256")
    try: out[name] = ast.literal_eval(val)
    except (ValueError, SyntaxError): out[name] = val
  return out

@cli.command()
@click.option("--json", "json_path", type=click.Path(dir_okay=False, writable=True), help="also write the results as JSON here")
@click.option("--config", "overrides", multiple=True, callback=_config_pair, metavar="NAME=VALUE",
              help="ModelArgs override of the seed config (repeatable), e.g. --config dim=256")
@click.option("--batch-size", "--batch_size", default=64, show_default=True, help="sequences per training step")
@click.option("--steps", default=5, show_default=True, help="timed training steps, after 3 warm-up (compile, capture, replay) steps")
@click.option("--new-tokens", "--new_tokens", default=500, show_default=True, help="sampled tokens to time")
@click.option("--against", type=click.Choice(["torch"]), multiple=True, help="also measure PyTorch (pip install '.[bench]')")
@click.option("--beam", default=0, show_default=True, help="tinygrad BEAM search width for kernels (slow once, cached)")
@click.option("--kernels", default=0, show_default=True, metavar="N", help="also list the N slowest kernels of a training step")
@click.option("--device", default="cpu", show_default=True, help="the tinygrad device to measure (as train's --device); "
              "--against torch runs PyTorch on the same hardware (cpu, cuda, mps)")
@click.option("--repeat", default=3, show_default=True, help="with --against torch: rounds of tinygrad and PyTorch eager "
              "training, interleaved; the spread of their ratios is reported")
@click.option("--roofline", is_flag=True, help="also time one training step's kernels by family (matmul, elementwise, ...) "
              "against this machine's own numpy sgemm rate at the model's matmul shapes and its memory bandwidth")
@click.option("--schedule", type=click.Choice(["cuda", "amd", "cpu"]), help="instead of timing: one training iteration's "
              "kernels rendered for this backend on tinygrad's NULL device, with estimated FLOPs and bytes (no GPU needed)")
def bench(json_path, overrides, batch_size, steps, new_tokens, against, beam, kernels, device, repeat, roofline, schedule):
  """Training and sampling speed of the seed config; with --against torch, PyTorch's on the same device in the same
  run, as ratios. With --schedule, the estimated cost of each kernel of a training step instead."""
  from tinystory import bench as b
  if schedule: b.schedule(overrides, batch_size, schedule, json_path, kernels or 25)
  else: b.bench(overrides, batch_size, steps, new_tokens, tuple(against), beam, json_path, kernels, device, repeat, roofline)

# ---- train ----

@cli.command(context_settings={"max_content_width": 120})
@click.argument("recipe", required=False, metavar="[RECIPE.toml]")
@llama2c_options(fields(TrainConfig))
@click.pass_context
def train(ctx, recipe, **options):
  """Train a model (llama2.c's train.py options and semantics; the defaults are the seed run's).

  RECIPE.toml: a recipe file of train's options (e.g. recipes/cpu-hour.toml); options typed after it override it."""
  from tinystory.train import train as run_training
  typed = ctx.meta.get("overrides", [])
  recipe = load_recipe(recipe, fields(TrainConfig)) if recipe is not None else None
  from_recipe = apply_recipe(options, recipe, typed)
  res = run_training(TrainConfig(**options), overrides=typed, argv=ctx.obj["argv"], recipe=recipe, from_recipe=from_recipe)
  if res and res.get("signal") == signal.SIGTERM: sys.exit(128 + signal.SIGTERM)  # saved; schedulers see it was stopped

# ---- sample ----

@cli.command(context_settings={"max_content_width": 120})
@llama2c_options(fields(SampleConfig))
@click.option("--preamble/--no-preamble", default=True, show_default=True,
              help="Print the Overriding lines, ModelArgs and state-dict shapes before the text.")
@click.pass_context
def sample(ctx, preamble, **options):
  """Sample from a checkpoint (llama2.c's sample.py options), streaming the text as it is generated.

  A generated BOS starts a new story: it shows as a blank line. Each sample ends with a line of dashes."""
  from tinystory.sample import sample as run_sampling
  run_sampling(SampleConfig(**options), overrides=ctx.meta.get("overrides", []), write=write_stdout, preamble=preamble)

# ---- eval ----

@cli.command("eval", context_settings={"max_content_width": 120})
@llama2c_options(fields(EvalConfig))
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object (notes and the progress bar "
              "go to stderr).")
def eval_command(as_json, **options):
  """Measure a model on a text: loss in nats per token, bits per token, bits per character and bits per UTF-8 byte,
  over windows of max_seq_len+1 tokens that cover the text (what is counted: docs/exchange.md). Bits per character
  compare models with different tokenizers; nats per token do not."""
  from tinystory.evaluate import run_eval
  if as_json: log_to_console(sys.stderr)
  with contextlib.ExitStack() as stack: res = run_eval(EvalConfig(**options), progress_bar(stack, "evaluating", sys.stderr))
  if as_json: click.echo(json.dumps(res))

# ---- export ----

@cli.command("export-log", context_settings={"max_content_width": 120})
@click.argument("run_dir")
@click.option("--out", type=click.Path(dir_okay=False), help="File to write; default: RUN_DIR/train-<run name>.sh.")
@click.option("--sample/--no-sample", "do_sample", default=True, show_default=True,
              help="Sample from the run's checkpoint now (saved as RUN_DIR/sample.txt), or reuse RUN_DIR/sample.txt.")
@click.option("--head", type=click.IntRange(min=0), default=5, show_default=True,
              help="First iteration lines kept of each training invocation.")
@click.option("--tail", type=click.IntRange(min=0), default=5, show_default=True,
              help="Last iteration lines kept of each training invocation.")
@click.option("--windows", multiple=True, help="More iteration lines to keep: ranges START-END, comma-separated "
              "(e.g. 700-710,53100-53105); repeatable.")
@click.option("--prompt", default="user@host tinystory %", show_default=True,
              help="Shell prompt shown before the commands (cosmetic); the Training section drops its user@host word.")
@llama2c_options([f for f in fields(SampleConfig) if f.name != "checkpoint"])
@click.pass_context
def export_log(ctx, run_dir, out, do_sample, head, tail, windows, prompt, **sample_options):
  """Write the run record of RUN_DIR: the sampling command and its output, each training command and the run's log
  (excerpted, lines copied verbatim), then a summary. Sampling options (those of `sample`) choose the sample."""
  from tinystory.export import export_log as run_export
  overrides = ctx.meta.get("overrides", [])
  if not do_sample and overrides:
    raise UserError(f"--no-sample reuses RUN_DIR/sample.txt: sampling options ({', '.join('--' + k for k, _ in overrides)}) "
                    "have no effect; drop them or drop --no-sample")
  log(f"wrote {run_export(run_dir, out, do_sample, sample_options, overrides, head, tail, list(windows), prompt, write_stdout)}")

@cli.command("export-model")
@click.argument("run")
@click.option("--format", "fmt", type=click.Choice(["hf", "llama2c", "llama2c-q8"]), required=True,
              help="hf: a transformers LlamaForCausalLM directory with tokenizer.json; llama2c: run.c's model.bin "
                   "(version 0) and tokenizer.bin; llama2c-q8: runq.c's Q8_0 model.bin (version 2) and tokenizer.bin.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Directory to write the files into.")
def export_model(run, fmt, out):
  """Export the model of RUN (run dir, checkpoint dir, or run name) for Hugging Face or llama2.c (docs/exchange.md)."""
  from tinystory.exchange import export_model as run_export
  for path in run_export(run, fmt, out): log(f"wrote {path}")

@cli.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--out", type=click.Path(dir_okay=False),
              help="PNG file to write; default: RUN/loss.png for one run, runs/compare.png for several.")
@click.option("--x", "x", type=click.Choice(["iter", "tokens", "seconds", "minutes"]), default="iter", show_default=True,
              help="The horizontal axis: iterations, tokens trained on, or the wall time of training in seconds or minutes.")
@click.option("--logx", is_flag=True, help="Logarithmic horizontal axis.")
def plot(runs, out, x, logx):
  """Plot the loss curves of one or more runs (run dirs or names) to a PNG: train loss per iteration, smoothed, and
  val loss at evals; several runs share one figure, labelled by the options that differ. Needs matplotlib."""
  from tinystory.plot import plot_runs
  log(f"wrote {plot_runs(list(runs), out, logx, x)}")

def main():
  """Run the CLI; a usage mistake prints one line (`Error: ...`) and exits 2, a bad value or file exits 1."""
  try: cli.main(standalone_mode=False)
  except click.exceptions.Abort: sys.exit("Aborted.")
  except click.ClickException as e:
    click.echo(f"Error: {e.format_message()}", err=True)
    sys.exit(e.exit_code)

if __name__ == "__main__": main()
