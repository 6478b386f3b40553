"""tinystory: train tiny LLaMA-style story models from scratch on a CPU with tinygrad."""
__version__ = "0.1.0"

def write_atomic(path, text: str) -> None:
  """Write a text file whole or not at all: a temp file beside it, then renamed over it."""
  import os, pathlib
  path = pathlib.Path(path)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text, encoding="utf-8")
  os.replace(tmp, path)

class UserError(Exception):
  """A mistake in the user's input (a file, an option, a value). The CLI prints it as one line and exits 1."""

def need(ok: bool, msg: str) -> None:
  """Raise UserError(msg) unless ok: one line per check of a user's input."""
  if not ok: raise UserError(msg)

def need_positive(cfg, *names: str) -> None:
  for k in names: need(getattr(cfg, k) > 0, f"--{k} must be a positive integer, got {getattr(cfg, k)}")

def option(default, help: str):
  """A field of a command's config dataclass with its --help text: cli.py makes one option of each field."""
  import dataclasses
  return dataclasses.field(default=default, metadata={"help": help})

# The seed run's model (llama2.c's ModelArgs names; hidden_dim None: 341 by llama2.c's rule). Here, not in model.py, so
# that train's defaults, the CLI and the PyTorch twin (bench/torch_llama.py) read it without importing tinygrad.
SEED_MODEL = dict(dim=128, n_layers=4, n_heads=16, n_kv_heads=16, vocab_size=361, hidden_dim=None, multiple_of=1,
                  norm_eps=1e-5, max_seq_len=128, dropout=0.15, ffn_bias=True, unembedding="pinv")
