"""Output directories that concurrent or killed writers cannot leave half-made.

A directory output (`data prepare`'s shards, `export-model`'s files) is built whole in a sibling temp directory named
after this process (OUT.<what>-tmp.<pid>) and swapped in with one atomic rename (Linux's renameat2 RENAME_EXCHANGE):
at every instant OUT is the old complete output or the new complete one. The temp directories of killed writers are
removed by the next writer (their pid is gone). Readers and writers of a directory take flock locks on it: writers
exclusive, readers (a trainer on its shards) shared, so a writer is refused while a reader is there.
"""
import contextlib, ctypes, errno, fcntl, glob, os, shutil
from pathlib import Path
from typing import Callable
from tinystory import UserError, create_dirs, remove_created, remove_stale, temp_name

# *** swapping a complete directory in ***

_AT_FDCWD, _RENAME_EXCHANGE = -100, 2

def exchange(a: Path, b: Path) -> bool:
  """Swap the paths `a` and `b` (both exist) in one atomic step; False where the system cannot (no renameat2, or a
  file system without RENAME_EXCHANGE)."""
  try: renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
  except (AttributeError, OSError): return False
  renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
  if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0: return True
  if (err := ctypes.get_errno()) in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP): return False
  raise OSError(err, os.strerror(err), str(b))

def install_dir(tmp: Path, out: Path, ours: Callable[[str], bool]) -> None:
  """Put the complete directory `tmp` in place of `out` atomically. The entries of an existing `out` that the writer
  does not make (not `ours(name)`) are kept: hard-linked into `tmp` first (a directory among them is refused, before
  anything changes). Where the system cannot swap atomically, `out` is moved aside to OUT.replaced-tmp.<pid> for the
  moment between two renames (recover_output puts it back after a crash there)."""
  if not out.exists():
    with contextlib.suppress(OSError): return os.rename(tmp, out)  # else it appeared meanwhile
  for entry in os.scandir(out):
    if ours(entry.name): continue
    if not entry.is_file(follow_symlinks=False):
      raise UserError(f"{out} holds {entry.name}, which is not a file this command writes: move it out of the way, or "
                      f"write into another directory")
    try: os.link(entry.path, tmp / entry.name)
    except OSError: shutil.copy2(entry.path, tmp / entry.name)  # a file system without hard links
  if exchange(tmp, out):
    shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old output
    return
  aside = temp_name(out, "replaced")
  os.rename(out, aside)
  os.rename(tmp, out)
  shutil.rmtree(aside, ignore_errors=True)

def recover_output(out: Path, what: str) -> None:
  """Before writing `out`: after a crash between install_dir's two renames (systems without an atomic swap) the old
  output back in place; the temp directories of writers that died (remove_stale) removed."""
  for p in out.parent.glob(f"{glob.escape(out.name)}.replaced-tmp.*") if not out.exists() else ():
    with contextlib.suppress(OSError): os.rename(p, out)
  for kind in ("replaced", what): remove_stale(out, kind)

def write_dir(out: Path, what: str, write) -> list[Path]:
  """Run `write(dir)` (it returns the files it wrote) in this process's own sibling of `out`, then swap it in whole
  (install_dir): a failed, killed or concurrent export leaves `out` the old export or the new one, never a mix.
  Files in `out` that the export does not write stay."""
  created = create_dirs(out.absolute().parent, what)
  recover_output(out, "export")
  tmp = temp_name(out, "export")
  try:
    shutil.rmtree(tmp, ignore_errors=True)  # a killed process's of the same pid
    tmp.mkdir()
    names = [p.name for p in write(tmp)]
    install_dir(tmp, out, lambda n: n.split(".write-tmp.")[0] in names)
  except BaseException as e:
    shutil.rmtree(tmp, ignore_errors=True)
    remove_created(created)
    if isinstance(e, OSError): raise UserError(f"cannot write --out {out}: {e.strerror or e}") from None
    raise
  return [out / n for n in names]

# *** directory locks ***

def _open_dir(path: Path) -> int | None:
  try: return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
  except FileNotFoundError: return None
  except OSError as e: raise UserError(f"cannot open directory {path}: {e.strerror or e}") from None

def _same(fd: int, path: Path) -> bool:
  """Whether `path` still names the directory open as `fd` (a writer may have swapped a new one in meanwhile)."""
  try: st, now = os.fstat(fd), os.stat(path)
  except FileNotFoundError: return False
  return (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino)

@contextlib.contextmanager
def reading(path: Path, writer: str):
  """Hold a shared lock on directory `path` while reading it: a writer (`writer` names the command) is refused
  meanwhile, and a directory being written is refused here with one line."""
  while True:
    if (fd := _open_dir(path)) is None: raise UserError(f"{path} does not exist")
    try: fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      raise UserError(f"{path} is being written by a `{writer}` right now: wait for it to finish") from None
    if _same(fd, path): break
    os.close(fd)
  try: yield
  finally: os.close(fd)

def lock_for_writing(path: Path, what: str, reader: str, needed: Callable[[], bool], wait: Callable[[], None]) -> int | None:
  """An exclusive flock on directory `path` (made if missing) for writing it: the open fd holding it, to be closed when
  done; None once `needed()` says there is nothing to write (checked first, and again after each wait, since another
  writer may have just written it). Another writer holding the lock is waited for (`wait()` says so); readers holding
  it refuse with one line (`what` names the option, `reader` who reads, e.g. "a `train`")."""
  while True:
    if not needed(): return None
    try: path.mkdir(exist_ok=True)
    except OSError as e: raise UserError(f"cannot create {what} {path}: {e.strerror or e}") from None
    if (fd := _open_dir(path)) is None: continue  # removed meanwhile by a writer that failed
    try: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      try: fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # granted: the holders are readers
      except BlockingIOError:  # another writer: wait for it, then look again
        wait()
        fcntl.flock(fd, fcntl.LOCK_EX)
      else:
        os.close(fd)
        if not needed(): return None
        raise UserError(f"{what} {path} is in use: {reader} is reading it, and writing it now would change the data "
                        f"under it; wait for it to end, or write into another directory") from None
    if _same(fd, path): return fd
    os.close(fd)
