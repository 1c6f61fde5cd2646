"""`load_config("file.py[:arg]", overrides)`: the one way configs are loaded.

Used by `python -m dynjax.main`, `python -m dynjax.flops` and the experiment
tools, so a config behaves the same everywhere. A config file is a Python
file with `get_config()` (or `get_config(arg)` when the spec has a `:arg`
suffix), as `ml_collections.config_flags` expects. Overrides are
`(dotted.key, text)` pairs as typed on the command line
(`--config.optimizer.learning_rate=0.1`); the text is parsed with the type of
the field it replaces.

Every mistake is a `dynjax.errors.UserError` with a one-line message: a
missing file, a file that fails to import, a `get_config` that raises, an
override key that does not exist (with ml_collections' "did you mean"), a
path through a field that is not a group (`--config.model.dynamic.density`),
and a value of the wrong type (`--config.num_epochs=abc`). The values
themselves (ranges, names) are checked afterwards by
`dynjax.train.config_check.validate`.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import itertools
import os
import re
import sys
from typing import Any, Iterable, Sequence

from ml_collections import config_dict

from dynjax.errors import UserError, describe

# Groups whose keys are free-form keyword arguments: overrides may add keys.
FREE_FORM_GROUPS = ("model_kwargs", "dynamic.options")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_NONE = ("none", "null")
_module_ids = itertools.count()


def load_config(spec: str, overrides: Iterable[tuple[str, Any]] = ()) -> config_dict.ConfigDict:
  """Loads `file.py[:arg]` and applies `overrides` in order.

  Args:
    spec: path of the config file, optionally followed by `:arg` (passed to
      `get_config` as a string, as ml_collections does).
    overrides: `(key, value)` pairs; `key` is dotted (`dataset.name`), `value`
      the command-line text (or None for a bare `--config.flag`, meaning
      True); non-string values are assigned as they are.

  Returns:
    The (unlocked) config.

  Raises:
    UserError: with a one-line message for any of the mistakes above.
  """
  config = call_get_config(spec)
  for key, value in overrides:
    apply_override(config, key, value)
  return config


def call_get_config(spec: str) -> config_dict.ConfigDict:
  """Imports the config file of `spec` and returns its `get_config(...)`."""
  path, has_arg, arg = spec.partition(":")
  shown = f"--config={spec}"
  if not path:
    raise UserError(f"{shown}: no config file given; expected --config=FILE.py[:ARG]")
  if not os.path.isfile(path):
    hint = " (it is a directory)" if os.path.isdir(path) else ""
    raise UserError(f"{shown}: config file {path!r} does not exist{hint}; give the path of a "
                    "Python file with get_config(), e.g. configs/quickstart.py")
  module = _import_file(path, shown)
  get_config = getattr(module, "get_config", None)
  if not callable(get_config):
    raise UserError(f"{shown}: {path!r} defines no get_config() function")
  call = f"get_config({arg!r})" if has_arg else "get_config()"
  try:
    config = get_config(arg) if has_arg else get_config()
  except TypeError as e:
    if has_arg and "positional argument" in str(e):
      raise UserError(f"{shown}: {path!r} takes no argument; drop ':{arg}'") from e
    raise UserError(f"{shown}: {call} failed: {describe(e)}") from e
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"{shown}: {call} failed: {_message(e)}") from e
  if isinstance(config, dict):
    config = config_dict.ConfigDict(config)
  if not isinstance(config, config_dict.ConfigDict):
    raise UserError(f"{shown}: {call} returned {type(config).__name__}, expected an "
                    "ml_collections ConfigDict")
  return config


def _import_file(path: str, shown: str):
  """Executes the config file as a fresh module (its own imports resolved from
  the current directory and the directory above the file's, where `configs/`
  lives)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
  for entry in (os.getcwd(), root):
    if entry not in sys.path and os.path.abspath(entry) not in map(os.path.abspath, sys.path):
      sys.path.append(entry)
  name = f"_dynjax_config_{next(_module_ids)}"
  module_spec = importlib.util.spec_from_file_location(name, path)
  if module_spec is None or module_spec.loader is None:
    raise UserError(f"{shown}: {path!r} is not a Python file")
  module = importlib.util.module_from_spec(module_spec)
  sys.modules[name] = module  # as a regular import (dataclasses look their module up)
  try:
    module_spec.loader.exec_module(module)
  except SyntaxError as e:
    del sys.modules[name]
    raise UserError(f"{shown}: {path!r} does not parse: {e.msg} (line {e.lineno})") from e
  except Exception as e:  # pylint: disable=broad-except
    del sys.modules[name]
    raise UserError(f"{shown}: importing {path!r} failed: {describe(e)}") from e
  return module


def _message(error: Exception) -> str:
  """A raising get_config's own one-line message is kept as it is (configs
  raise `ValueError("arch must be one of ...")`); other errors get their type."""
  text = error.args[0] if isinstance(error, KeyError) and error.args else error
  if isinstance(error, (ValueError, KeyError)) and str(text).strip():
    return " ".join(str(text).split())
  return describe(error)


def apply_override(config: config_dict.ConfigDict, key: str, value: Any) -> None:
  """Sets `config.<key>` from command-line text `value` (see `load_config`)."""
  flag = f"--config.{key}"
  parts = key.split(".")
  if not key or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p) for p in parts):
    raise UserError(f"{flag}: not a config field name (expected --config.a.b=VALUE)")
  node, where = config, "config"
  for i, part in enumerate(parts):
    last = i == len(parts) - 1
    if not isinstance(node, config_dict.ConfigDict):
      raise UserError(f"{flag}: {where} is a {type(node).__name__} ({node!r}), not a group of "
                      f"fields, so it has no field {part!r}; set --{where}=VALUE instead")
    if part not in node:
      free_form = where.split(".", 1)[-1] in FREE_FORM_GROUPS
      if last and free_form:
        _set(node, part, _parse_untyped(value), flag)
        return
      raise UserError(f"{flag}: {where} has no field {part!r}"
                      f"{_suggestion(part, node, config, key)}")
    if last:
      break
    node, where = node[part], f"{where}.{part}"
  field = parts[-1]
  current = node[field]
  if isinstance(current, config_dict.ConfigDict) and not isinstance(value, (dict,
                                                                         config_dict.ConfigDict)):
    parsed = _parse_untyped(value)
    if not isinstance(parsed, dict):
      example = next(iter(current.keys()), "name")
      raise UserError(f"{flag}: config.{key} is a group of fields; set them one by one, "
                      f"e.g. --config.{key}.{example}=VALUE")
    value = parsed
  _set(node, field, _parse_typed(node, field, value, flag), flag)


def _suggestion(part: str, node: config_dict.ConfigDict, config: config_dict.ConfigDict,
                key: str) -> str:
  """ml_collections' "did you mean" for a missing key; else a field of that
  name elsewhere in the config (`learning_rate` -> `optimizer.learning_rate`)."""
  try:
    node[part]  # pylint: disable=pointless-statement
  except KeyError as e:
    match = re.search(r'Did you mean "([^"]+)"', str(e))
    if match:
      return f"; did you mean {match.group(1)!r}?"
  paths = sorted(_field_paths(config), key=lambda p: (p.count("."), len(p), p))
  suffix = key.split(".")[key.split(".").index(part):]
  close = [p for p in paths if p.split(".")[-len(suffix):] == suffix]
  if not close:
    leaves = difflib.get_close_matches(part, {p.split(".")[-1] for p in paths}, n=1)
    close = [p for p in paths if leaves and p.split(".")[-1] == leaves[0]]
  if close:
    return "; did you mean " + " or ".join(f"--config.{p}" for p in close[:3]) + "?"
  return f"; its fields are {sorted(node.keys())}"


def _field_paths(node: config_dict.ConfigDict, prefix: str = "") -> Iterable[str]:
  for name, value in node.items():
    yield prefix + name
    if isinstance(value, config_dict.ConfigDict):
      yield from _field_paths(value, f"{prefix}{name}.")


def _parse_typed(node: config_dict.ConfigDict, field: str, value: Any, flag: str) -> Any:
  """Command-line text -> a value of the field's type."""
  if not isinstance(value, str) and value is not None:
    return value
  field_type = node.get_type(field)
  if value is None:  # a bare `--config.flag`
    if field_type is bool:
      return True
    raise UserError(f"{flag} needs a value: {flag}=VALUE")
  text = value.strip()
  if text.lower() in _NONE and node[field] is None and field_type is not str:
    return None  # unset an optional field (e.g. max_train_steps)
  if field_type is bool:
    if text.lower() in _TRUE:
      return True
    if text.lower() in _FALSE:
      return False
    raise UserError(f"{flag}: expected true or false, got {value!r}")
  if field_type is int:
    parsed = _literal(text)
    if isinstance(parsed, float) and parsed.is_integer() and "e" in text.lower():
      parsed = int(parsed)  # 1e3
    if not isinstance(parsed, int) or isinstance(parsed, bool):
      raise UserError(f"{flag}: expected an integer, got {value!r}")
    return parsed
  if field_type is float:
    try:
      return float(text)
    except ValueError:
      raise UserError(f"{flag}: expected a number, got {value!r}") from None
  if field_type is str:
    return value
  if field_type in (tuple, list):
    parsed = _literal(text if text else "()")
    if isinstance(parsed, str):
      parsed = tuple(p.strip() for p in text.split(",") if p.strip())
    elif not isinstance(parsed, (tuple, list)):
      parsed = (parsed,)
    return tuple(parsed)
  if isinstance(field_type, type) and issubclass(field_type, config_dict.ConfigDict):
    return value
  return _parse_untyped(value)


def _parse_untyped(value: Any) -> Any:
  """Literal if it parses as one (`3`, `0.5`, `(1, 2)`, `{'a': 1}`), else the text."""
  if not isinstance(value, str):
    return True if value is None else value
  if value.strip().lower() in _TRUE[:1] + _FALSE[:1]:
    return value.strip().lower() == "true"
  return _literal(value.strip())


def _literal(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
    return text


def _set(node: config_dict.ConfigDict, field: str, value: Any, flag: str) -> None:
  try:
    node[field] = value
  except (TypeError, ValueError, KeyError, AttributeError) as e:
    wanted = node.get_type(field).__name__ if field in node else "a value"
    raise UserError(f"{flag}: expected {wanted}, got {value!r} ({describe(e)})") from e


def split_override_args(argv: Sequence[str]) -> tuple[list[tuple[str, str | None]], list[str]]:
  """Separates `--config.key[=value]` arguments from the rest of `argv`.

  Accepts `--config.key=value`, `--config.key value`, the bare boolean
  `--config.key` (True) and `--noconfig.key` (False), as absl's config flags do.

  Returns:
    `(overrides, remaining argv)`.
  """
  overrides, rest = [], []
  i = 0
  while i < len(argv):
    arg = argv[i]
    match = re.match(r"^--?(no)?config\.(.*)$", arg)
    if not match:
      rest.append(arg)
      i += 1
      continue
    negated, body = match.group(1), match.group(2)
    key, has_value, value = body.partition("=")
    if negated:
      overrides.append((key, "false"))
    elif has_value:
      overrides.append((key, value))
    elif i + 1 < len(argv) and (not argv[i + 1].startswith("-")
                                or re.fullmatch(r"-[\d.].*", argv[i + 1])):
      overrides.append((key, argv[i + 1]))
      i += 1
    else:
      overrides.append((key, None))
    i += 1
  return overrides, rest
