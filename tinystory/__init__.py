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
