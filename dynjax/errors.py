"""The one error type for mistakes a user can fix.

`UserError` is raised for anything that comes from what the user typed or
pointed at (a config override, a config file, a dataset file, a workdir, an
`init_from` path, a damaged checkpoint with nothing to fall back to). Its
message is one line that names the field or file, says what is wrong and what
to do; `python -m dynjax.main` prints it as `error: <message>` with exit
status 1 and no traceback (pass `--debug` or set `DYNJAX_DEBUG=1` for the
traceback). It is a `ValueError`, so callers that caught `ValueError` from
the config helpers keep working.
"""

from __future__ import annotations

import os


class UserError(ValueError):
  """A mistake the user can fix; `str(error)` is one line."""

  def __init__(self, message: str):
    super().__init__(one_line(message))


def one_line(text: str) -> str:
  """`text` folded to one line: whitespace runs (newlines too) become one space."""
  return " ".join(str(text).split())


def describe(error: BaseException) -> str:
  """`TypeName: first line of the message` of a foreign exception (for wrapping)."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def debug_requested() -> bool:
  """True when `DYNJAX_DEBUG` asks for tracebacks (`1`, `true`, `yes`)."""
  return os.environ.get("DYNJAX_DEBUG", "").strip().lower() in ("1", "true", "yes")
