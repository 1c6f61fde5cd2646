"""Entry point: `python -m dynjax.main --config=configs/<file>.py[:arg] --workdir=DIR`.

Override any config field on the command line, e.g. `--config.num_epochs=3`.
Everything testable lives in `dynjax.train.train_and_evaluate`.

A mistake the user can fix (a flag, an override, a config file, a dataset
file, a workdir, an `init_from` path, a checkpoint that cannot be restored)
ends the run with one line on stderr, `error: <what is wrong and what to do>`,
and exit status 1. `--debug` (or `DYNJAX_DEBUG=1`) shows the traceback instead.
"""

import logging as python_logging
import sys

from absl import app
from absl import flags
from absl import logging

from dynjax import config_loading
from dynjax import errors

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "Experiment config file (file.py[:arg]); override its "
                    "fields with --config.<field>=<value>.")
flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
flags.DEFINE_bool("debug", False, "Show tracebacks of user-facing errors (also DYNJAX_DEBUG=1).")

_OVERRIDES: list = []


class _QuietCheckpointLogs(python_logging.Filter):
  """Drops orbax's per-save INFO lines; its warnings and errors still show."""

  def filter(self, record: python_logging.LogRecord) -> bool:
    return record.levelno >= python_logging.WARNING or "/orbax/" not in record.pathname


# Exceptions (besides `UserError`) whose message is the whole story for the
# user, by module: only modules already imported can have raised them, so a
# typo in an override is reported without importing JAX.
_USER_ERRORS_BY_MODULE = (("dynjax.train.config_check", "ConfigError"),
                          ("dynjax.data.sources", "DatasetNotPreparedError"),
                          ("dynjax.train.trainer", "NonFiniteLossError"))


def user_error_types() -> tuple[type[BaseException], ...]:
  """`UserError` and the other one-line error types of the loaded modules."""
  found = [errors.UserError]
  for module, name in _USER_ERRORS_BY_MODULE:
    error_type = getattr(sys.modules.get(module), name, None)
    if isinstance(error_type, type):
      found.append(error_type)
  return tuple(found)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flags without the `--config.*` overrides (collected for `load_config`);
  flag mistakes are one line too."""
  overrides, rest = config_loading.split_override_args(argv[1:])
  _OVERRIDES[:] = overrides
  try:
    remaining = FLAGS([argv[0]] + rest)
  except flags.Error as e:
    _fail(f"{errors.one_line(e)} (see --helpshort)", e)
  for name, what in (("config", "FILE.py[:ARG], e.g. --config=configs/quickstart.py"),
                     ("workdir", "DIR, the directory for checkpoints and metrics")):
    if not FLAGS[name].value:
      _fail(f"--{name} is required: --{name}={what}")
  if len(remaining) > 1:
    _fail(f"unexpected arguments {remaining[1:]}; config fields are set as "
          "--config.<field>=<value>")
  return remaining


def _fail(message: str, error: BaseException | None = None):
  if error is not None and (errors.debug_requested() or FLAGS["debug"].value):
    raise error
  print(f"error: {errors.one_line(message)}", file=sys.stderr)
  sys.exit(1)


def load_checked_config():
  """The config with overrides, checked before JAX starts (so a typo costs a
  second, not a compilation)."""
  config = config_loading.load_config(FLAGS.config, _OVERRIDES)
  from dynjax.train.config_check import validate  # pylint: disable=g-import-not-at-top
  validate(config)
  config.lock()
  return config


def main(argv):
  del argv  # checked in parse_flags
  logging.get_absl_handler().addFilter(_QuietCheckpointLogs())
  try:
    run()
  except Exception as e:  # pylint: disable=broad-except
    if not isinstance(e, user_error_types()) or FLAGS.debug or errors.debug_requested():
      raise
    _fail(str(e))


def run():
  config = load_checked_config()
  from dynjax.data import validate as data_validate  # pylint: disable=g-import-not-at-top
  from dynjax.train import checkpoints as ckpt_lib  # pylint: disable=g-import-not-at-top
  data_validate.check_dataset(config.dataset, config.num_classes)
  ckpt_lib.check_workdir(FLAGS.workdir)
  if config.init_from and not ckpt_lib.has_checkpoint(FLAGS.workdir):
    ckpt_lib.check_init_from(config.init_from)
  from dynjax import distributed  # pylint: disable=g-import-not-at-top
  distributed.initialize()  # no-op for a single process
  import jax  # pylint: disable=g-import-not-at-top
  from dynjax.train import train_and_evaluate  # pylint: disable=g-import-not-at-top
  logging.info("JAX process %d/%d, devices: %s", jax.process_index(), jax.process_count(),
               jax.devices())
  result = train_and_evaluate(config, FLAGS.workdir)
  if jax.process_index() == 0:
    print(summary_line(result))


def summary_line(result) -> str:
  """`test top-1 ..., MACs dense ... / dynamic ... (reduction ...)`."""
  text = f"step {result['step']}: test top-1 {100 * result['top1']:.2f}%"
  if "dense_macs" in result:
    text += (f", MACs/example dense {result['dense_macs'] / 1e6:.4f}M, dynamic "
             f"{result['dynamic_macs'] / 1e6:.4f}M, reduction {100 * result['mac_reduction']:.1f}%")
  return text


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
