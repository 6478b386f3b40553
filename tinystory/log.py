"""The one output path of the package: everything the package says goes through `log`.

The console gets each message as is; a run adds its `train.log` with `log_to_file`, so the file holds exactly what
the user saw (export-log copies lines from it verbatim).
"""
import contextlib, logging, os, sys
from tinystory import UserError, open_append, open_nofollow, write_error

logger = logging.getLogger("tinystory")
logger.setLevel(logging.INFO)
logger.propagate = False

def log(msg: str = "") -> None: logger.info(msg)

def log_to_console(stream=None) -> logging.Handler:
  """Print messages to `stream` (stdout by default). Idempotent; a second call points the console at the current
  stdout (click's test runner swaps it per invocation)."""
  for h in logger.handlers:
    if getattr(h, "tinystory_console", False):
      h.stream = stream or sys.stdout  # not setStream, which flushes the old stream: it may be closed by now
      return h
  h = _ConsoleHandler(stream or sys.stdout)
  h.setFormatter(logging.Formatter("%(message)s"))
  h.tinystory_console = True
  logger.addHandler(h)
  return h

class _ConsoleHandler(logging.StreamHandler):
  def handleError(self, record):
    # `... | head` closed the pipe: drop the message quietly (the text stream's own write then ends the command)
    if not isinstance(sys.exc_info()[1], BrokenPipeError): super().handleError(record)

class _FlushingFileHandler(logging.FileHandler):
  """Each message written through at once; a write error (disk full, read-only) is a UserError naming the file, which
  ends the command with one line, instead of logging's traceback on stderr and a run that goes on unrecorded."""
  def _open(self): return open_append(self.baseFilename)  # never through a link planted in the run dir

  def emit(self, record):
    try:
      if self.stream is None: self.stream = self._open()
      self.stream.write(self.format(record) + self.terminator)
      self.stream.flush()
    except OSError as e: raise write_error(self.baseFilename, e) from None

class _Pending(logging.Handler):
  def __init__(self):
    super().__init__()
    self.records = []
  def emit(self, record): self.records.append(record)

def log_to_pending() -> logging.Handler:
  """Keep every message from now on, for a file that is not opened yet (log_to_file(path, pending))."""
  h = _Pending()
  logger.addHandler(h)
  return h

def log_to_file(path, pending: logging.Handler | None = None) -> logging.Handler:
  """Append every message to `path` (a run's train.log) until `stop_logging_to(handler)`, starting with those kept by
  `pending` (which stops). A torn last line (a killed process's) is dropped first."""
  drop_torn_line(path)
  h = _FlushingFileHandler(path, mode="a", encoding="utf-8", delay=True)
  h.setFormatter(logging.Formatter("%(message)s"))
  if pending is not None:
    stop_logging_to(pending)
    for record in pending.records: h.emit(record)
  logger.addHandler(h)
  return h

def log_only_to(handler: logging.Handler, msg: str) -> None:
  """Write `msg` through one handler only: a run's train.log gets the `Error: ...` line that the CLI prints on the
  console itself. A failed write is dropped, never retried: it may be the very error being recorded (a full disk)."""
  with contextlib.suppress(UserError, OSError): handler.emit(logging.makeLogRecord({"msg": msg}))

def stop_logging_to(handler: logging.Handler) -> None:
  logger.removeHandler(handler)
  with contextlib.suppress(OSError): handler.close()  # a write error was reported when it happened

def drop_torn_line(path) -> None:
  """Cut a file of lines after its last newline: a process killed mid-write leaves part of a line, which the next
  appended line would run into."""
  try:
    with os.fdopen(open_nofollow(path, os.O_RDWR), "rb+") as f:
      size = f.seek(0, os.SEEK_END)
      f.seek(max(0, size - (1 << 16)))
      if (tail := f.read()) and not tail.endswith(b"\n"): f.truncate(size - len(tail) + tail.rfind(b"\n") + 1)
  except FileNotFoundError: return
  except OSError as e: raise write_error(path, e) from None

def fmt_duration(s: float) -> str:
  """Seconds as h:mm:ss."""
  s = int(s)
  return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
