"""Saving and loading fitted rerankers: identical scores after a round trip, clear errors for bad folders."""
import json
import tarfile

import numpy as np
import pyterrier as pt
import pytest

from pyterrier_headrank import HeadRank
from pyterrier_headrank.artifact import HeadRankArtifact

import fit_data
from conftest import tiny_decoder

FILES = {"headrank.json", "adapter.safetensors", "training.json", "pt_meta.json"}


def _scores(reranker):
    return reranker.transform(fit_data.results()).sort_values(["qid", "docno"]).score.to_numpy()


@pytest.fixture(scope="module")
def aligned(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    reranker = HeadRank(model, tokenizer=tokenizer, max_passage_tokens=24, batch_size=2)
    reranker.fit(fit_data.results(), fit_data.qrels(), k=3, max_layer=3, epochs=2, lr=2e-2, cv_folds=0,
                 verbose=False)
    assert reranker.adapter_ is not None
    return reranker


@pytest.fixture(scope="module")
def saved(aligned, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "headrank-tiny"
    aligned.save(path)
    return path


def test_round_trip_gives_identical_scores(aligned, saved, tiny_qwen3):
    model, tokenizer = tiny_qwen3
    assert {p.name for p in saved.iterdir()} == FILES
    loaded = HeadRank.from_pretrained(saved, model=model, tokenizer=tokenizer)
    assert loaded.heads == aligned.heads and loaded.max_passage_tokens == 24
    assert loaded.batch_size is None  # a machine setting: not saved (the folder was made with batch_size=2)
    np.testing.assert_array_equal(_scores(loaded), _scores(aligned))
    zero_shot = HeadRank(model, tokenizer=tokenizer, max_passage_tokens=24, heads=aligned.heads)  # no adapters
    assert not np.allclose(_scores(zero_shot), _scores(loaded)), "the adapters were loaded and used"
    assert loaded.fit_summary_["alignment"]["adapter"]["layers"] == list(aligned.adapter_.config.layers)
    assert loaded.head_profile_.select(3, 0.1).heads == aligned.heads.heads


def test_pyterrier_artifact_load(aligned, saved, tiny_qwen3):
    model, tokenizer = tiny_qwen3
    meta = json.loads((saved / "pt_meta.json").read_text())
    assert (meta["type"], meta["format"]) == ("reranker", "headrank")
    artifact = pt.Artifact.load(str(saved), model=model, tokenizer=tokenizer)
    assert isinstance(artifact, HeadRankArtifact)
    np.testing.assert_array_equal(_scores(artifact), _scores(aligned))
    np.testing.assert_array_equal(_scores(artifact.reranker()), _scores(aligned))


def test_package_for_the_hub_unpacks_to_a_loadable_folder(aligned, saved, tiny_qwen3, tmp_path):
    """to_hf uploads PyTerrier's package of the folder; from_hf downloads and unpacks it. Check the package offline."""
    from lz4.frame import LZ4FrameFile

    model, tokenizer = tiny_qwen3
    package = HeadRankArtifact(saved, model=model, tokenizer=tokenizer).build_package(
        str(tmp_path / "artifact.tar.lz4"), verbose=False)
    out = tmp_path / "unpacked"
    with LZ4FrameFile(package) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        tar.extractall(out, filter="data")
    artifact = pt.Artifact.load(str(out), model=model, tokenizer=tokenizer)
    np.testing.assert_array_equal(_scores(artifact), _scores(aligned))


def test_selection_only_folder_has_no_adapter(tiny_qwen3, tmp_path):
    model, tokenizer = tiny_qwen3
    reranker = HeadRank(model, tokenizer=tokenizer, max_passage_tokens=24)
    reranker.fit(fit_data.results(), fit_data.qrels(), align=False, k=2, max_layer=2, verbose=False)
    reranker.save(tmp_path / "sel")
    assert {p.name for p in (tmp_path / "sel").iterdir()} == FILES - {"adapter.safetensors"}
    loaded = HeadRank.from_pretrained(tmp_path / "sel", model=model, tokenizer=tokenizer)
    np.testing.assert_array_equal(_scores(loaded), _scores(reranker))


def _copy(saved, tmp_path):
    import shutil
    target = tmp_path / "copy"
    shutil.copytree(saved, target)
    return target


def test_clear_errors(saved, tiny_qwen3, tmp_path):
    model, tokenizer = tiny_qwen3
    with pytest.raises(FileNotFoundError, match="HeadRank"):
        HeadRank.from_pretrained(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="HeadRank.save"):
        HeadRank.from_pretrained(tmp_path / "empty", model=model, tokenizer=tokenizer)
    other = tmp_path / "pisa"
    other.mkdir()
    (other / "pt_meta.json").write_text(json.dumps({"type": "sparse_index", "format": "pisa"}))
    with pytest.raises(ValueError, match="sparse_index.pisa"):
        HeadRank.from_pretrained(other, model=model, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="pass it again"):  # fitted on a model object: the model must be given
        HeadRank.from_pretrained(saved)

    corrupt = _copy(saved, tmp_path)
    (corrupt / "headrank.json").write_text('{"format_version": 1, "heads": ')
    with pytest.raises(ValueError, match="corrupt"):
        HeadRank.from_pretrained(corrupt, model=model, tokenizer=tokenizer)


def test_adapter_file_missing_or_corrupt(saved, tiny_qwen3, tmp_path):
    model, tokenizer = tiny_qwen3
    folder = _copy(saved, tmp_path)
    data = bytearray((folder / "adapter.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (folder / "adapter.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        HeadRank.from_pretrained(folder, model=model, tokenizer=tokenizer)
    (folder / "adapter.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="adapter.safetensors is missing"):
        HeadRank.from_pretrained(folder, model=model, tokenizer=tokenizer)


def test_folder_for_another_model(saved, qwen3_tokenizer):
    other = tiny_decoder("llama")
    reranker = HeadRank.from_pretrained(saved, model=other, tokenizer=qwen3_tokenizer)
    with pytest.raises(ValueError, match="fitted on a model of shape"):
        reranker.transform(fit_data.results())


def test_no_pickle_and_versioned(saved, tmp_path):
    for path in saved.iterdir():
        assert not path.read_bytes().startswith(b"\x80"), f"{path.name} looks like a pickle"
    folder = _copy(saved, tmp_path)
    data = json.loads((folder / "headrank.json").read_text())
    data["format_version"] = 99
    (folder / "headrank.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="format version"):
        HeadRank.from_pretrained(folder, model="smollm2-135m")
