"""Keyword terms: chemistry identifiers survive whole, documents and queries analysed alike."""

import pytest

from pipelines.terms import keyword_terms, keyword_text

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "identifier",
    ["Li6PS5Cl", "LiNi0.8Mn0.1Co0.1O2", "MOF-808", "7440-06-4", "CsPbI3", "UiO-66", "Li(Ni0.8Mn0.1Co0.1)O2"],
)
def test_identifiers_survive_in_running_text(identifier):
    text = f"We report {identifier}, which (unlike {identifier}-free cells) reaches 10 mS/cm at 25 °C."
    assert identifier.lower() in keyword_terms(text)
    assert keyword_terms(identifier)[0] == identifier.lower()  # the query side makes the same term


def test_joined_terms_add_their_parts_but_decimal_points_do_not_split():
    assert keyword_terms("MOF-808") == ["mof-808", "mof", "808"]
    assert keyword_terms("LiNi0.8Mn0.1Co0.1O2") == ["lini0.8mn0.1co0.1o2"]
    assert keyword_terms("25 mS/cm") == ["25", "ms/cm", "ms", "cm"]


def test_unicode_subscripts_and_case_fold_to_what_chemists_type():
    assert keyword_terms("Li₆PS₅Cl") == ["li6ps5cl"]
    assert keyword_terms("ＭＯＦ-808")[0] == "mof-808"  # full-width letters (NFKC)


def test_stopwords_dropped_and_trailing_punctuation_not_part_of_a_term():
    assert keyword_terms("The conductivity of the film is high.") == ["conductivity", "film", "high"]
    assert keyword_terms("(LiFePO4).") == ["lifepo4"]


def test_arxiv_ids_answer_with_and_without_version():
    terms = keyword_terms("arXiv:2405.01234v2")
    assert {"2405.01234v2", "2405.01234"} <= set(terms)


def test_keyword_text_cuts_at_a_term_boundary():
    text = keyword_text("alpha beta gamma delta", limit_bytes=12)
    assert text == "alpha beta"
    assert len(keyword_text("x" * 50 + " y", limit_bytes=10)) <= 10
