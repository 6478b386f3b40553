"""tinystory: train tiny LLaMA-style story models from scratch on a CPU with tinygrad."""
import errno, glob, os, shutil
from pathlib import Path
__version__ = "0.1.0"

class UserError(Exception):
  """A mistake in the user's input (a file, an option, a value). The CLI prints it as one line and exits 1."""

def write_error(path, e: OSError, note: str = "") -> UserError:
  """The one-line error for a failed write (disk full, read-only, permission): `raise write_error(path, e) from None`."""
  return UserError(f"cannot write {path}: {e.strerror or e}" + (f" ({note})" if note else ""))

def write_file(path, data: bytes, new: bool = False) -> None:
  """Write `data` to a new or truncated file (`new`: one that must not exist yet) and fsync it. Created 0666 less the
  umask (0644 under the usual 022), as every file the project writes. A symbolic link at `path` is never followed."""
  fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT | (os.O_EXCL if new else os.O_TRUNC))
  try:
    view = memoryview(data)
    while view: view = view[os.write(fd, view):]
    os.fsync(fd)
  finally: os.close(fd)

def open_nofollow(path, flags: int, mode: int = 0o666) -> int:
  """os.open that refuses a symbolic link at `path` (O_NOFOLLOW): a link planted in a run or output directory must not
  send a write to a file outside it. The refusal is a UserError naming the link."""
  try: return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
  except OSError as e:
    if e.errno != errno.ELOOP: raise
    raise UserError(f"{path} is a symbolic link: tinystory does not write through links in its directories (one "
                    f"pointing outside could be overwritten); remove it") from None

def open_append(path):
  """A text file (UTF-8) appended to, created if missing, never through a link (open_nofollow): train.log, metrics.jsonl."""
  return os.fdopen(open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a", encoding="utf-8")

def fsync_dir(path) -> None:
  """Make the renames in directory `path` durable."""
  fd = os.open(path, os.O_RDONLY)
  try: os.fsync(fd)
  finally: os.close(fd)

def write_atomic(path, data: str | bytes) -> None:
  """Write a file whole or not at all: a new temp file beside it, this process's own (temp_name), fsynced, then renamed
  over it, so concurrent writers leave one of their files whole. A write error (disk full, read-only, permission) is a
  UserError naming the file and the cause, with no temp file left; those of killed writers go too."""
  path = Path(path)
  tmp = temp_name(path, "write")
  try:
    tmp.unlink(missing_ok=True)  # a killed process's of the same pid, or a link planted under that name
    write_file(tmp, data.encode("utf-8") if isinstance(data, str) else data, new=True)
    os.replace(tmp, path)
    fsync_dir(path.parent)
  except OSError as e:
    try: tmp.unlink(missing_ok=True)
    except OSError: pass
    raise write_error(path, e) from None
  remove_stale(path, "write")

def temp_name(path: Path, what: str) -> Path:
  """This process's temp sibling of `path`, PATH.<what>-tmp.<pid>: two writers never share one."""
  return path.with_name(f"{path.name}.{what}-tmp.{os.getpid()}")

def remove_stale(path: Path, what: str) -> None:
  """Remove the temp siblings of `path` (temp_name) left by writers that died: their pid no longer runs."""
  for p in path.parent.glob(f"{glob.escape(path.name)}.{what}-tmp.*"):
    if (pid := p.name.rsplit(".", 1)[1]).isdigit() and not pid_alive(int(pid)):
      if p.is_dir() and not p.is_symlink(): shutil.rmtree(p, ignore_errors=True)
      else:
        try: p.unlink()
        except OSError: pass

def pid_alive(pid: int) -> bool:
  try: os.kill(pid, 0)
  except ProcessLookupError: return False
  except PermissionError: pass  # another user's
  return True

def create_dirs(path, what: str) -> Path | None:
  """mkdir -p `path` (`what` names it in errors, e.g. "--out_dir"); returns the topmost directory it created, None if
  `path` existed, so that a command that then fails can remove what it made (remove_created). A path that is a file,
  lies under a file, or cannot be created (read-only, /proc, permission) is a UserError."""
  path = Path(path)
  if path.is_dir(): return None
  if path.exists(): raise UserError(f"{what} {path} is a file, expected a directory")
  if (f := next((p for p in path.parents if p.exists() and not p.is_dir()), None)) is not None:
    raise UserError(f"{what} {path}: {f} is a file, not a directory")
  top = None
  for p in reversed([path, *path.parents]):  # one level at a time: a level made by another process is not ours
    if p.is_dir(): continue
    try:
      p.mkdir()
      top = top or p
    except FileExistsError:
      if not p.is_dir(): raise UserError(f"{what} {path}: {p} is a file, not a directory") from None
    except OSError as e:
      remove_created(top)
      hint = " (not a place for files: choose a directory on a disk)" if e.errno in (errno.ENOENT, errno.EPERM) else ""
      raise UserError(f"cannot create {what} {path}: {e.strerror or e}{hint}") from None
  return top

def remove_created(top: Path | None) -> None:
  """Remove a directory tree create_dirs made (None: it made nothing)."""
  if top is not None: shutil.rmtree(top, ignore_errors=True)

def need(ok: bool, msg: str) -> None:
  """Raise UserError(msg) unless ok: one line per check of a user's input."""
  if not ok: raise UserError(msg)
