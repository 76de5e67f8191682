"""Compound-mention detection, scored on a small labelled sample of paper sentences."""

import pytest

from pipelines.sources.mentions import find_mentions, is_formula

pytestmark = pytest.mark.unit

# (sentence, the compounds a chemist would look up in PubChem) — written and labelled by this team.
SAMPLE = [
    ("Olivine LiFePO4 loses capacity at 55 C through Fe dissolution.", {"LiFePO4"}),
    ("Ga-doped Li7La3Zr2O12 garnet reaches 1.3 mS/cm at 25 C.", {"Li7La3Zr2O12"}),
    ("Single Pt atoms on CeO2 steps oxidise CO below 150 K, measured by DFT and TPD.", {"CeO2"}),
    ("Water adsorption on anatase TiO2(101) from machine-learned potentials.", {"TiO2"}),
    ("Cerium oxide supports and titanium dioxide films were compared.", {"cerium oxide", "titanium dioxide"}),
    ("Cathodes of lithium iron phosphate were coated with carbon.", {"lithium iron phosphate"}),
    ("Boron nitride fillers raise thermal conductivity; HER and OER were not studied.", {"boron nitride"}),
    ("MoS2 monolayers and Cu2O nanowires reduce CO2 to ethylene.", {"MoS2", "Cu2O", "CO2"}),
    ("We converge CCSD(T)/CBS barriers and compare 30 functionals.", set()),
    ("PtSn clusters in silicalite-1 dehydrogenate propane; 5x5x5 supercells were used.", set()),
    ("Electrolytes of LiPF6 in ethylene carbonate form HF with moisture.", {"LiPF6", "ethylene carbonate"}),
    ("SrTiO3 doped with Al splits water under UV light.", {"SrTiO3", "water"}),
]
KNOWN = ["ethylene carbonate", "water", "dimethyl carbonate"]


def score():
    tp = fp = fn = 0
    for text, gold in SAMPLE:
        found = set(find_mentions(text, KNOWN))
        tp += len(found & gold)
        fp += len(found - gold)
        fn += len(gold - found)
    return tp / (tp + fp), tp / (tp + fn)


def test_precision_and_recall_on_labelled_sample():
    precision, recall = score()
    assert precision >= 0.9, precision
    assert recall >= 0.85, recall


@pytest.mark.parametrize(
    "token,ok",
    [
        ("LiFePO4", True),
        ("TiO2", True),
        ("Li7La3Zr2O12", True),
        ("LiNi0.8Mn0.1Co0.1O2", True),
        ("DFT", False),
        ("CBS", False),
        ("HER", False),
        ("C2", False),
        ("PtSn", False),
        ("Xy2", False),
        ("NMR", False),
        ("H2O", True),
    ],
)
def test_formula_rule(token, ok):
    assert is_formula(token) is ok
