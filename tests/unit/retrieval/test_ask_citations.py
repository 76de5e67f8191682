import pytest

from pipelines.retrieval.ask import cited

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "answer,expected",
    [
        ("Ru on BaTiO3 [1], at 340 C [3].", [1, 3]),
        ("Both agree [1, 2] and [2][3].", [1, 2, 3]),
        ("See [7] and [0]: neither is a source.", []),
        ("The process of dry reforming involves methane.", []),
    ],
)
def test_the_sources_an_answer_cites(answer, expected):
    assert cited(answer, 3) == expected
