"""The one output path of the package: everything the package says goes through `log`.

The console gets each message as is; a run adds its `train.log` with `log_to_file`, so the file holds exactly what
the user saw (export-log copies lines from it verbatim).
"""
import logging, sys

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
  def emit(self, record):
    super().emit(record)
    self.flush()

def log_to_file(path) -> logging.Handler:
  """Append every message to `path` (a run's train.log) until `stop_logging_to(handler)`."""
  h = _FlushingFileHandler(path, mode="a", encoding="utf-8")
  h.setFormatter(logging.Formatter("%(message)s"))
  logger.addHandler(h)
  return h

def stop_logging_to(handler: logging.Handler) -> None:
  logger.removeHandler(handler)
  handler.close()

def fmt_duration(s: float) -> str:
  """Seconds as h:mm:ss."""
  s = int(s)
  return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
