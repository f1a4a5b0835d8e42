"""The reranker that the ``headrank`` command and ``headrank serve`` build from their options (``--model``,
``--heads``, ``--fitted``, ``--batch-size``, ...). Its own module, below both commands, so that neither imports the
other; nothing heavy is imported until a reranker is built."""
from __future__ import annotations

import json
import os
import pathlib

from .trec_files import CliError, first_line

DEFAULT_MODEL = "smollm2-135m"


def parse_heads(value: str):
    """``--heads``: ``LAYER:HEAD[:WEIGHT]`` items separated by commas, or a JSON file holding a head set."""
    from pyterrier_headrank.heads import HeadSet

    if os.path.isfile(value):
        try:
            data = json.loads(pathlib.Path(value).read_text())
        except ValueError as err:
            raise CliError(f"--heads: {value} is not JSON ({err})") from None
        if isinstance(data, dict) and "heads" not in data and isinstance(data.get("head_set"), dict):
            data = data["head_set"]
        try:
            return HeadSet.coerce(data if isinstance(data, dict) else [tuple(item) for item in data])
        except (ValueError, TypeError) as err:
            raise CliError(f"--heads: {value}: {first_line(err)}") from None
    items = []
    for item in value.split(","):
        parts = item.strip().split(":")
        try:
            if len(parts) == 2:
                items.append((int(parts[0]), int(parts[1])))
            elif len(parts) == 3:
                items.append((int(parts[0]), int(parts[1]), float(parts[2])))
            else:
                raise ValueError
        except ValueError:
            raise CliError(f"--heads: {item.strip()!r} is not LAYER:HEAD or LAYER:HEAD:WEIGHT (nor a file)") from None
    if any(len(item) == 3 for item in items):  # weights given for some: the others weigh 1
        items = [item if len(item) == 3 else (*item, 1.0) for item in items]
    try:
        return HeadSet.coerce(items)
    except ValueError as err:
        raise CliError(f"--heads: {first_line(err)}") from None


def build_reranker(args):
    """HeadRank from ``--model``/``--heads`` or from a ``--fitted`` folder."""
    from pyterrier_headrank.headrank import HeadRank

    options = dict(batch_size=args.batch_size, device=args.device, dtype=args.dtype, verbose=not args.quiet)
    if args.max_passage_tokens is not None:
        options["max_passage_tokens"] = args.max_passage_tokens
    try:
        if getattr(args, "fitted", None):  # a folder, a shipped fit or a hub id, as HeadRank.from_pretrained takes
            if args.model is not None:
                options["model"] = args.model
            return HeadRank.from_pretrained(args.fitted, **options)
        heads = parse_heads(args.heads) if args.heads else None
        return HeadRank(args.model or DEFAULT_MODEL, heads, **options)
    except (ValueError, ImportError, OSError) as err:
        raise CliError(first_line(err)) from None
