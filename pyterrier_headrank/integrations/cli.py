"""The ``headrank`` command: rerank a first-stage run, fit heads, evaluate runs.

    headrank rerank --collection dl21-passage-bm25top100 --run bm25.txt --cutoff 20 -o headrank.txt
    headrank rerank --candidates candidates.jsonl -o headrank.txt
    headrank fit --collection beir-scifact/train -o fitted/
    headrank evaluate --collection dl21-passage-bm25top100 bm25.txt headrank.txt
    headrank serve --port 8080   (HTTP rerank service: pyterrier_headrank.integrations.serve, docs/serve.md)

Collections are the shared sets or ir_datasets ids of :mod:`pyterrier_headrank.data`. Runs are TREC run files
(``qid Q0 docno rank score tag``), read and written with :mod:`pyterrier.io`, as are TREC qrels. Errors in the input
end the command with one line on stderr and exit status 1 (2 for a wrong command line).

pandas, PyTerrier and torch are imported inside the commands, not here, so that ``headrank --help`` and usage errors
answer at once. The console script and ``python -m pyterrier_headrank.integrations.cli`` run :func:`run`.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
from typing import List, Optional, Sequence

from pyterrier_headrank.models import ALIASES  # a table: importing it loads no torch

from .reranker_options import DEFAULT_MODEL, build_reranker, parse_heads
from .trec_files import (  # the file functions are part of this module's public names too
    QRELS_COLUMNS,
    RUN_COLUMNS,
    CliError,
    RunOutput,
    first_line,
    rank_by_score,
    read_candidates,
    read_qrels,
    read_trec_run,
    require_file,
    write_trec_run,
)

PROG = "headrank"
DEFAULT_MEASURES = ("nDCG@10", "RR@10")
DEFAULT_CUTOFF = 20
#: ``headrank fit --preset`` names (:data:`pyterrier_headrank.integrations.presets.PRESETS`; not imported here, so
#: that ``headrank --help`` stays fast)
PRESET_NAMES = ("paper", "paper-offline")


# ---- collections, models ----------------------------------------------------------------------------------------
def load_collection(name: str):
    """The collection ``name`` (:func:`pyterrier_headrank.data.get_collection`), its failures as one-line CliErrors."""
    from pyterrier_headrank.data import get_collection

    try:
        return get_collection(name)
    except (KeyError, FileNotFoundError, ValueError) as err:
        raise CliError(first_line(err)) from None
    except Exception as err:  # ir_datasets: unknown id, no network, ...
        raise CliError(f"cannot open collection {name!r}: {first_line(err)}") from None


def check_cheap_arguments(args) -> None:
    """The checks that need no model, no PyTerrier and no pandas, made first so that their errors answer at once: the
    cutoff, the input files, the model name or folder, the --heads syntax and, with torch alone, the device."""
    if getattr(args, "cutoff", None) is not None and args.cutoff < 1:
        raise CliError("--cutoff must be >= 1")
    for what in ("run", "candidates", "qrels"):
        if getattr(args, what, None):
            require_file(getattr(args, what), what)
    if args.model is not None:
        from pyterrier_headrank.models import resolve_model  # no torch at import: the name and the folder only

        try:
            resolve_model(args.model)
        except (ValueError, ImportError, FileNotFoundError) as err:
            raise CliError(first_line(err)) from None
    if getattr(args, "heads", None):
        parse_heads(args.heads)
    if args.device is not None:  # needs torch, not the model or PyTerrier
        from pyterrier_headrank.models import pick_device

        try:
            pick_device(args.device)
        except ValueError as err:
            raise CliError(first_line(err)) from None


def check_output_folder(path: str) -> None:
    """Fail before fitting if the folder to save into cannot be created."""
    target = pathlib.Path(path)
    if target.exists() and not target.is_dir():
        raise CliError(f"--output {path} exists and is not a folder")
    parent = target.resolve().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise CliError(f"cannot create the folder {path}: {parent} does not exist or is not writable")


# ---- commands ---------------------------------------------------------------------------------------------------
def candidates_for(args):
    """The candidate frame ``qid, query, docno, score, rank, text`` from --run/--candidates and --collection."""
    collection = load_collection(args.collection) if args.collection else None
    if args.candidates:
        frame = read_candidates(args.candidates)
    elif args.run:
        frame = read_trec_run(args.run)
    elif collection is not None:
        try:
            frame = collection.get_results()
        except NotImplementedError:
            raise CliError(f"collection {args.collection!r} ships no first-stage run: pass --run") from None
        frame = rank_by_score(frame[[c for c in frame.columns if c != "rank"]])
    else:
        raise CliError("give --run or --candidates (or a --collection that ships a run)")
    missing = [c for c in ("query", "text") if c not in frame.columns or frame[c].isna().any()]
    if missing and collection is None:
        raise CliError(f"the candidates lack {' and '.join(missing)}: pass --collection to look them up")
    if "query" in missing:
        topics = collection.get_topics()
        frame = frame.drop(columns=["query"], errors="ignore").merge(topics, on="qid", how="left")
        unknown = frame.loc[frame["query"].isna(), "qid"].unique()
        if len(unknown):
            raise CliError(f"{len(unknown)} query id(s) of the run are not topics of {args.collection!r}, "
                           f"e.g. {list(unknown[:3])}")
    if "text" in missing:
        try:
            frame = collection.text_loader()(frame.drop(columns=["text"], errors="ignore"))
        except KeyError as err:
            raise CliError(f"{err.args[0] if err.args else err} (is --collection the run's collection?)") from None
    if args.queries is not None:
        keep = list(dict.fromkeys(frame["qid"]))[: args.queries]
        frame = frame[frame["qid"].isin(keep)]
    return frame.sort_values(["qid", "rank"], kind="stable").reset_index(drop=True)


def rerank_frame(reranker, frame, cutoff: Optional[int]):
    """Rerank the first ``cutoff`` candidates of each query; the rest stay below them in first-stage order."""
    import pandas as pd

    head = frame[frame["rank"] < cutoff] if cutoff else frame
    rest = frame[frame["rank"] >= cutoff] if cutoff else frame.iloc[:0]
    reranked = reranker(head[["qid", "query", "docno", "score", "rank", "text"]])
    if len(rest):
        floor = reranked.groupby("qid")["score"].min()
        rest = rest.copy()
        rest["score"] = rest["qid"].map(floor).fillna(0.0) - 1.0 - rest["rank"].astype("float64")
        rest["rank"] = rest["rank"].astype("int64")
    out = pd.concat([reranked[["qid", "docno", "score", "rank"]], rest[["qid", "docno", "score", "rank"]]],
                    ignore_index=True)
    return rank_by_score(out)


def cmd_rerank(args) -> int:
    """``headrank rerank``: rerank the candidates and write a TREC run; every input is checked before any scoring,
    those that need no model before anything heavy is imported."""
    output = RunOutput(args.output)  # its temporary file exists from here on: an unwritable --output fails now
    try:
        check_cheap_arguments(args)
        reranker = build_reranker(args)  # checks the device before any data is read
        frame = candidates_for(args)
        try:
            out = rerank_frame(reranker, frame, args.cutoff)
        except (ValueError, ImportError, OSError) as err:
            raise CliError(first_line(err)) from None
        output.write(out, args.tag)
    finally:
        output.discard()
    if not args.quiet and args.output != "-":
        print(f"{PROG}: reranked {frame['qid'].nunique()} queries -> {args.output}", file=sys.stderr)
    return 0


def parse_measures(names: Sequence[str]):
    """``--measures`` (names separated by spaces or commas) as ir_measures measures; an unknown one is a CliError."""
    import ir_measures

    measures = []
    for name in names:
        for part in name.replace(",", " ").split():
            try:
                measures.append(ir_measures.parse_measure(part))
            except (ValueError, NameError, SyntaxError, TypeError) as err:
                raise CliError(f"unknown measure {part!r} (ir_measures syntax, e.g. nDCG@10, RR@10, P@5, "
                               f"AP): {first_line(err)}") from None
    if not measures:
        raise CliError("--measures: give at least one measure")
    return measures


def qrels_for(args):
    """The qrels of ``evaluate``: from --qrels, else from --collection."""
    if args.qrels:
        return read_qrels(args.qrels)
    if args.collection:
        return load_collection(args.collection).get_qrels()
    raise CliError("give --qrels or --collection")


def evaluate_runs(qrels, runs: Sequence[str], measures):
    """One row per run: its name, the number of judged queries it answers, and each measure (mean over them)."""
    import ir_measures
    import pandas as pd

    judged = set(qrels["qid"])
    qrels = qrels.rename(columns={"qid": "query_id", "docno": "doc_id", "label": "relevance"})
    rows = []
    for path in runs:
        run = read_trec_run(path)
        answered = judged & set(run["qid"])
        if not answered:
            raise CliError(f"run {path} answers none of the judged queries (wrong qrels?)")
        # as trec_eval without -c: the mean over the judged queries that the run answers, not over all judged ones
        values = ir_measures.calc_aggregate(measures, qrels[qrels["query_id"].isin(answered)],
                                            run.rename(columns={"qid": "query_id", "docno": "doc_id"}))
        rows.append({"run": pathlib.Path(path).name, "queries": len(answered),
                     **{str(m): float(values[m]) for m in measures}})
    return pd.DataFrame(rows)


def cmd_evaluate(args) -> int:
    """``headrank evaluate``: print one row per run (table, CSV or JSON) on stdout."""
    for what, path in ([("qrels", args.qrels)] if args.qrels else []) + [("run", run) for run in args.runs]:
        require_file(path, what)  # before pandas and ir_measures are imported
    measures = parse_measures(args.measures)
    qrels = qrels_for(args)
    table = evaluate_runs(qrels, args.runs, measures)
    if args.format == "csv":
        sys.stdout.write(table.to_csv(index=False))
    elif args.format == "json":
        sys.stdout.write(table.to_json(orient="records") + "\n")
    else:
        sys.stdout.write(table.to_string(index=False, float_format=lambda v: f"{v:.4f}") + "\n")
    return 0


def cmd_fit(args) -> int:
    """``headrank fit``: fit heads (and alignment) on the judged queries of the candidates and save the reranker."""
    if not args.collection and not args.qrels and not args.preset:
        raise CliError("give --collection (topics and qrels), --qrels with --candidates/--run, or --preset")
    check_cheap_arguments(args)
    check_output_folder(args.output)
    args.heads = None
    reranker = build_reranker(args)
    frame, qrels = training_data(args)
    try:
        reranker.fit(frame, qrels, **fit_options(args))
        reranker.save(args.output)
    except (ValueError, TypeError, ImportError, OSError) as err:
        raise CliError(first_line(err)) from None
    if not args.quiet:
        print(f"{PROG}: fitted {len(reranker.head_set)} heads on {frame['qid'].nunique()} queries -> {args.output}",
              file=sys.stderr)
    return 0


def training_data(args):
    """``headrank fit``'s candidates and qrels: a --preset's training set, or --collection/--run/--qrels."""
    if args.preset:
        from .presets import PRESETS, training_set
        if args.collection or args.run or args.candidates or args.qrels:
            raise CliError("--preset names its own collections: leave out --collection, --run, --candidates and "
                           "--qrels")
        return training_set(PRESETS[args.preset], load_collection, args.cutoff, args.queries)
    frame = candidates_for(args)
    qrels = read_qrels(args.qrels) if args.qrels else load_collection(args.collection).get_qrels()
    frame = frame[frame["qid"].isin(set(qrels["qid"]))]
    if frame.empty:
        raise CliError("no query of the candidates has relevance judgements")
    if args.cutoff:
        frame = frame[frame["rank"] < args.cutoff]
    return frame, qrels


#: ``headrank fit`` option -> HeadRank.fit setting (see pyterrier_headrank.training.settings.FitSettings)
FIT_OPTIONS = {"num_heads": "k", "lam": "lam", "max_layer": "max_layer", "select_queries": "select_queries",
               "epochs": "epochs", "seed": "seed"}


def fit_options(args) -> dict:
    """The HeadRank.fit keywords given on the command line (the others keep HeadRank.fit's defaults)."""
    options = {setting: getattr(args, name) for name, setting in FIT_OPTIONS.items()
               if getattr(args, name, None) is not None}
    if args.no_align:
        options["align"] = False
    options["verbose"] = not args.quiet
    return options


# ---- parser -----------------------------------------------------------------------------------------------------
class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Shows an option's default where it has one and its help does not already say it."""

    def _get_help_string(self, action):
        """The option's help, with ``(default: ...)`` appended where that adds something."""
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (a count such as --queries), else a usage error."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def _add_candidates(parser, run_help: str):
    """The options that say where candidates come from (shared by rerank and fit)."""
    parser.add_argument("--collection", "-c",
                        help="shared set name (e.g. beir-scifact, dl21-passage-bm25top100, vaswani) or ir_datasets "
                             "id: where query texts, passage texts (and qrels) come from")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run", "-r", help=run_help)
    source.add_argument("--candidates", help="JSONL of candidates, one per line: qid, docno and usually query, text "
                                             "(and score or rank for the first-stage order)")
    parser.add_argument("--queries", type=positive_int, default=None,
                        help="use only the first N queries of the run (for a quick try)")


def _add_model(parser, heads: bool = True):
    """The options that build the reranker (shared by rerank and fit; fit selects heads itself)."""
    parser.add_argument("--model", "-m", default=None,
                        help=f"model: an alias ({', '.join(sorted(ALIASES))}), a Hugging Face hub "
                             f"id, a local folder or a .gguf file (default: {DEFAULT_MODEL}; with --fitted, the "
                             f"model it was fitted on)")
    if heads:
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--heads", help="heads to read: LAYER:HEAD[:WEIGHT] items separated by commas, or a JSON "
                                           "head-set file (default: the model's registered fit, for smollm2-135m "
                                           "the shipped general fit fused with the first stage; for a model "
                                           "without one, the training-free heads)")
        group.add_argument("--fitted", help="a fitted reranker: a folder written by `headrank fit`, a shipped fit "
                                            "(smollm2-135m-scifact) or a hub id, as HeadRank.from_pretrained takes; "
                                            "its heads, adapters and settings (--model overrides its model)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="prompt windows per forward pass (default: HeadRank's: 1 on CPU; on GPU as many as "
                             "the free memory holds, at most 64)")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: CUDA when present)")
    parser.add_argument("--dtype", default="auto",
                        help="auto (bfloat16 on GPU, float32 on CPU), bfloat16, float16 or float32")
    parser.add_argument("--max-passage-tokens", type=int, default=None,
                        help="each passage is cut to this many tokens (default: the fit's, 64 for smollm2-135m's "
                             "shipped fits; 128 for a model without a fit)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars or messages")


def build_parser() -> argparse.ArgumentParser:
    """The ``headrank`` argument parser with its rerank, fit and evaluate sub-commands."""
    parser = argparse.ArgumentParser(prog=PROG, formatter_class=_Formatter, description=(
        "HeadRank: rerank passages by the attention a few heads of a decoder LLM pay from the query to each "
        "passage (one forward pass, no decoding)."))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    rerank = sub.add_parser("rerank", formatter_class=_Formatter, help="rerank a TREC run or a JSONL of candidates",
                            description="Rerank the top --cutoff candidates of each query with HeadRank and write a "
                                        "TREC run; candidates below the cutoff follow in first-stage order.")
    _add_candidates(rerank, "TREC run to rerank (qid Q0 docno rank score tag); default: the collection's shipped run")
    _add_model(rerank)
    rerank.add_argument("--cutoff", "-k", type=int, default=DEFAULT_CUTOFF,
                        help="candidates reranked per query (the rest keep their first-stage order below them)")
    rerank.add_argument("--tag", default="headrank", help="run tag written in the last column")
    rerank.add_argument("--output", "-o", required=True, help="TREC run file to write ('-' for standard output)")
    rerank.set_defaults(func=cmd_rerank)

    fit = sub.add_parser("fit", formatter_class=_Formatter, help="select heads from topics, qrels and a run; save",
                         description="Fit a reranker (select and weight heads) on judged queries and their "
                                     "first-stage candidates, and save it to a folder for --fitted.")
    _add_candidates(fit, "TREC run of first-stage candidates; default: the collection's shipped run")
    fit.add_argument("--preset", choices=PRESET_NAMES, default=None,
                     help="a named training set instead of --collection: 'paper' is TREC DL 2021-2023 passage "
                          "through ir_datasets (211 judged queries, the paper's count; network needed once), "
                          "'paper-offline' DL21 alone from the shared folder")
    fit.add_argument("--qrels", help="qrels file (TREC or BEIR TSV); default: the collection's qrels")
    _add_model(fit, heads=False)
    fit.add_argument("--cutoff", "-k", type=int, default=DEFAULT_CUTOFF,
                     help="candidates per query used for fitting")
    fit.add_argument("--num-heads", type=int, default=None, help="heads to select (default: HeadRank.fit's, 8)")
    fit.add_argument("--lam", type=float, default=None,
                     help="weight of the attention-entropy penalty in head selection (default: HeadRank.fit's)")
    fit.add_argument("--max-layer", type=int, default=None,
                     help="deepest layer considered in selection (default: two thirds of the depth)")
    fit.add_argument("--select-queries", type=int, default=None,
                     help="profile heads on at most this many queries (default: all)")
    fit.add_argument("--no-align", action="store_true",
                     help="select heads only (training-free); skip the LoRA alignment step")
    fit.add_argument("--epochs", type=int, default=None, help="at most this many alignment epochs")
    fit.add_argument("--seed", type=int, default=None, help="random seed of the fit")
    fit.add_argument("--output", "-o", required=True, help="folder to save the fitted reranker to")
    fit.set_defaults(func=cmd_fit, fitted=None)

    evaluate = sub.add_parser("evaluate", formatter_class=_Formatter, help="evaluate TREC runs against qrels",
                              description="Evaluate runs with ir_measures and print one row per run (means over the "
                                          "judged queries each run answers).")
    evaluate.add_argument("runs", nargs="+", metavar="RUN", help="TREC run files")
    qrels = evaluate.add_mutually_exclusive_group()
    qrels.add_argument("--qrels", help="qrels file: TREC (qid 0 docno label) or BEIR TSV (query-id corpus-id score)")
    qrels.add_argument("--collection", "-c", help="shared set name or ir_datasets id whose qrels to use")
    evaluate.add_argument("--measures", nargs="+", default=list(DEFAULT_MEASURES),
                          help="ir_measures measures, e.g. nDCG@10 RR@10 P@5 AP")
    evaluate.add_argument("--format", choices=["table", "csv", "json"], default="table", help="output format")
    evaluate.set_defaults(func=cmd_evaluate)

    from .serve.command import add_serve_command  # light: FastAPI and the model load when `serve` runs
    add_serve_command(sub, _add_model, _Formatter)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help (0) or a usage error (2, already printed)
        return int(stop.code or 0)
    try:
        return args.func(args)
    except (CliError, ValueError, KeyError, OSError, ImportError) as err:  # bad input: one line, no traceback
        print(f"{PROG} {args.command}: error: {first_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


__all__ = ["PROG", "DEFAULT_MODEL", "DEFAULT_MEASURES", "DEFAULT_CUTOFF", "CliError", "RUN_COLUMNS", "QRELS_COLUMNS",
           "read_trec_run", "read_candidates", "read_qrels", "write_trec_run", "load_collection", "parse_heads",
           "build_reranker", "check_cheap_arguments", "RunOutput", "check_output_folder", "candidates_for", "rerank_frame",
           "cmd_rerank", "parse_measures", "qrels_for", "evaluate_runs", "cmd_evaluate", "cmd_fit", "FIT_OPTIONS",
           "fit_options", "build_parser", "main", "run"]

if __name__ == "__main__":
    run()
