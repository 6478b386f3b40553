"""tinystory: train tiny LLaMA-style story models from scratch on a CPU with tinygrad."""
import os
from pathlib import Path
__version__ = "0.1.0"

class UserError(Exception):
  """A mistake in the user's input (a file, an option, a value). The CLI prints it as one line and exits 1."""

def write_file(path, data: bytes) -> None:
  """Write `data` to a new or truncated file and fsync it. Created 0666 less the umask (0644 under the usual 022),
  as every file the project writes."""
  fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
  try:
    view = memoryview(data)
    while view: view = view[os.write(fd, view):]
    os.fsync(fd)
  finally: os.close(fd)

def fsync_dir(path) -> None:
  """Make the renames in directory `path` durable."""
  fd = os.open(path, os.O_RDONLY)
  try: os.fsync(fd)
  finally: os.close(fd)

def write_atomic(path, data: str | bytes) -> None:
  """Write a file whole or not at all: a temp file beside it, fsynced, then renamed over it. A write error (disk
  full, read-only, permission) is a UserError naming the file and the cause, with no temp file left."""
  path = Path(path)
  tmp = path.with_name(path.name + ".tmp")
  try:
    write_file(tmp, data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)
    fsync_dir(path.parent)
  except OSError as e:
    try: tmp.unlink(missing_ok=True)
    except OSError: pass
    raise UserError(f"cannot write {path}: {e.strerror or e}") from None
