"""Entry point: `python -m dynjax.main --config=configs/<file>.py[:arg] --workdir=DIR`.

Override any config field on the command line, e.g. `--config.num_epochs=3`.
Everything testable lives in `dynjax.train.train_and_evaluate`.
"""

import logging as python_logging
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from dynjax import distributed

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
config_flags.DEFINE_config_file("config", None, "Experiment config file (file.py[:arg]).",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


class _QuietCheckpointLogs(python_logging.Filter):
  """Drops orbax's per-save INFO lines; its warnings and errors still show."""

  def filter(self, record: python_logging.LogRecord) -> bool:
    return record.levelno >= python_logging.WARNING or "/orbax/" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_QuietCheckpointLogs())
  distributed.initialize()  # no-op for a single process
  import jax  # pylint: disable=g-import-not-at-top
  from dynjax.train import ConfigError, NonFiniteLossError, train_and_evaluate  # pylint: disable=g-import-not-at-top
  from dynjax.data import DatasetNotPreparedError  # pylint: disable=g-import-not-at-top
  logging.info("JAX process %d/%d, devices: %s", jax.process_index(), jax.process_count(),
               jax.devices())
  try:
    result = train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (ConfigError, DatasetNotPreparedError, NonFiniteLossError) as e:
    sys.exit(f"error: {e}")
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
  app.run(main)
