"""Compatibility alias: the ``headrank`` command moved to :mod:`pyterrier_headrank.integrations.cli`; this keeps
``from pyterrier_headrank.cli import main`` and ``python -m pyterrier_headrank.cli`` working."""
from pyterrier_headrank.integrations.cli import *  # noqa: F403
from pyterrier_headrank.integrations.cli import __all__, run  # noqa: F401  (__all__: the same public names)

if __name__ == "__main__":
    run()
