import re

import pytest

from pipelines.documents import Document, chunk_text, dedupe_documents, normalize_text

pytestmark = pytest.mark.unit


def words(text):
    return [m.span() for m in re.finditer(r"\S+", text)]


@pytest.mark.parametrize(
    "raw,clean",
    [
        ("LiFePO$_4$ cathodes", "LiFePO4 cathodes"),
        ("Li$_7$La$_3$Zr$_2$O$_{12}$ garnet", "Li7La3Zr2O12 garnet"),
        (r"\mathrm{TiO}_2 at 55 $^\circ$C", "TiO2 at 55 °C"),
        ("Phenethylammonium &amp; formamidinium", "Phenethylammonium & formamidinium"),
        ("  spread\nover\tlines  ", "spread over lines"),
        (r"as shown \cite{smith2020} for $\alpha$-Fe", "as shown for alpha-Fe"),
        (r"\hbar\partial_E and 1.2 \mu m", "hbar partialE and 1.2 μ m"),
        (r"19.9\% of \textit{natural} boron", "19.9% of natural boron"),
    ],
)
def test_normalize(raw, clean):
    assert normalize_text(raw) == clean


def test_short_text_is_one_chunk():
    chunks = chunk_text("a short abstract", "2611.1", "arxiv", words, max_tokens=10, overlap=2)
    assert [(c.chunk_id, c.text) for c in chunks] == [("arxiv:2611.1#0", "a short abstract")]


def test_long_text_becomes_overlapping_windows_covering_everything():
    text = " ".join(f"w{i}" for i in range(25))
    chunks = chunk_text(text, "d", "arxiv", words, max_tokens=10, overlap=3)
    toks = [c.text.split() for c in chunks]
    assert all(len(t) <= 10 for t in toks)
    assert [t[0] for t in toks] == ["w0", "w7", "w14", "w21"]
    assert toks[0][-3:] == toks[1][:3]  # overlap
    assert toks[-1][-1] == "w24"  # nothing dropped at the end
    assert [c.chunk_id for c in chunks] == [f"arxiv:d#{i}" for i in range(4)]
    assert chunk_text(text, "d", "arxiv", words, max_tokens=10, overlap=3) == chunks  # stable


def test_overlap_must_be_smaller_than_window():
    with pytest.raises(ValueError):
        chunk_text("a b c", "d", "arxiv", words, max_tokens=3, overlap=3)


def test_dedupe_keeps_highest_version():
    v1 = Document("arxiv", "x", "t", "old", version=1)
    v2 = Document("arxiv", "x", "t", "new", version=2)
    other = Document("arxiv", "y", "t", "y")
    assert {d.text for d in dedupe_documents([v2, other, v1])} == {"new", "y"}


def test_content_hash_covers_text_version_and_model():
    d = Document("arxiv", "x", "t", "text", version=1)
    h = d.content_hash("m1")
    assert h == Document("arxiv", "x", "t", "text", version=1).content_hash("m1")
    assert h != d.content_hash("m2")
    assert h != Document("arxiv", "x", "t", "text", version=2).content_hash("m1")
    assert h != Document("arxiv", "x", "t", "text!", version=1).content_hash("m1")
