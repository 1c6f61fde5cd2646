"""The base config every dynjax experiment imports and overrides.

Run (any config file works the same way; override fields on the command line):

  python -m dynjax.main --config=configs/default.py --workdir=/tmp/dynjax_default \
      --config.num_epochs=3

This base trains a dense M-CifarNet on the offline `digits` data; experiment
configs (one `get_config(arg)` per paper table row family) start from
`get_config()` here and change only what their recipe states. Every field is
checked by `dynjax.train.config_check.validate`: unknown keys, out-of-range
densities and unknown names fail with a one-line error. The fields and their
documentation live in `dynjax/train/defaults.py`, inside the package, so the
checker and library users see the same schema.
"""

from dynjax.train.defaults import DTYPES, get_config, optimizer_config  # noqa: F401
