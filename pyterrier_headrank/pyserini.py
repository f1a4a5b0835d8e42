"""Compatibility alias: the Pyserini adapter moved to :mod:`pyterrier_headrank.integrations.pyserini` (and its Java
start-up to :mod:`pyterrier_headrank.integrations.java`); this keeps ``pyterrier_headrank.pyserini`` imports working."""
from pyterrier_headrank.integrations.pyserini import *  # noqa: F403
from pyterrier_headrank.integrations.pyserini import __all__  # noqa: F401
