"""Bridges from HeadRank to other tools: the ``headrank`` command line (:mod:`.cli`), Pyserini hits and rank_llm-style
requests (:mod:`.pyserini`), and the Java start-up that Pyserini needs (:mod:`.java`).

Each is imported only when used, so that none of their dependencies (pandas, PyTerrier, Pyserini, a JVM) load with
the package.
"""
