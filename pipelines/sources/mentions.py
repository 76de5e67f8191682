"""Find compound names and formulas mentioned in paper text, as candidates for PubChem name lookup.

Two cheap, precise detectors (precision matters more than recall: every candidate costs a PubChem request):

* **formulas** — tokens made only of valid element symbols and counts (``LiFePO4``, ``TiO2``,
  ``Li7La3Zr2O12``, ``CeO2``) with at least two different elements, and either a count or three or more
  symbols in mixed case, so that acronyms such as ``DFT``, ``CBS`` or ``HER`` are not taken for chemistry;
* **names** — "<element> [<element>] <anion word>" phrases (``cerium oxide``, ``lithium iron phosphate``,
  ``titanium dioxide``, ``boron nitride``) and any name from the lab's watch list found in the text.

Candidates are normalised (formulas as written, names lower-case) and de-duplicated. Whatever PubChem
does not resolve is dropped (and negatively cached) by the caller.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

ELEMENTS = {
    "H",
    "He",
    "Li",
    "Be",
    "B",
    "C",
    "N",
    "O",
    "F",
    "Ne",
    "Na",
    "Mg",
    "Al",
    "Si",
    "P",
    "S",
    "Cl",
    "Ar",
    "K",
    "Ca",
    "Sc",
    "Ti",
    "V",
    "Cr",
    "Mn",
    "Fe",
    "Co",
    "Ni",
    "Cu",
    "Zn",
    "Ga",
    "Ge",
    "As",
    "Se",
    "Br",
    "Kr",
    "Rb",
    "Sr",
    "Y",
    "Zr",
    "Nb",
    "Mo",
    "Tc",
    "Ru",
    "Rh",
    "Pd",
    "Ag",
    "Cd",
    "In",
    "Sn",
    "Sb",
    "Te",
    "I",
    "Xe",
    "Cs",
    "Ba",
    "La",
    "Ce",
    "Pr",
    "Nd",
    "Pm",
    "Sm",
    "Eu",
    "Gd",
    "Tb",
    "Dy",
    "Ho",
    "Er",
    "Tm",
    "Yb",
    "Lu",
    "Hf",
    "Ta",
    "W",
    "Re",
    "Os",
    "Ir",
    "Pt",
    "Au",
    "Hg",
    "Tl",
    "Pb",
    "Bi",
    "Po",
    "At",
    "Rn",
    "Fr",
    "Ra",
    "Ac",
    "Th",
    "Pa",
    "U",
    "Np",
    "Pu",
}
ELEMENT_NAMES = [
    "hydrogen",
    "lithium",
    "beryllium",
    "boron",
    "carbon",
    "nitrogen",
    "oxygen",
    "fluorine",
    "sodium",
    "magnesium",
    "aluminum",
    "aluminium",
    "silicon",
    "phosphorus",
    "sulfur",
    "chlorine",
    "potassium",
    "calcium",
    "scandium",
    "titanium",
    "vanadium",
    "chromium",
    "manganese",
    "iron",
    "cobalt",
    "nickel",
    "copper",
    "zinc",
    "gallium",
    "germanium",
    "arsenic",
    "selenium",
    "bromine",
    "rubidium",
    "strontium",
    "yttrium",
    "zirconium",
    "niobium",
    "molybdenum",
    "ruthenium",
    "rhodium",
    "palladium",
    "silver",
    "cadmium",
    "indium",
    "tin",
    "antimony",
    "tellurium",
    "iodine",
    "cesium",
    "caesium",
    "barium",
    "lanthanum",
    "cerium",
    "neodymium",
    "europium",
    "gadolinium",
    "hafnium",
    "tantalum",
    "tungsten",
    "rhenium",
    "osmium",
    "iridium",
    "platinum",
    "gold",
    "mercury",
    "lead",
    "bismuth",
    "uranium",
]
ANIONS = [
    "oxide",
    "dioxide",
    "trioxide",
    "monoxide",
    "nitride",
    "carbide",
    "sulfide",
    "disulfide",
    "selenide",
    "telluride",
    "fluoride",
    "chloride",
    "bromide",
    "iodide",
    "hydride",
    "hydroxide",
    "phosphate",
    "carbonate",
    "nitrate",
    "sulfate",
    "silicate",
    "titanate",
    "zirconate",
    "hexafluorophosphate",
    "perchlorate",
    "arsenide",
    "phosphide",
    "boride",
    "oxyhydroxide",
]
_FORMULA_TOKEN = re.compile(r"(?<![\w-])((?:[A-Z][a-z]?\d*(?:\.\d+)?)+)(?![\w-])")
_PART = re.compile(r"([A-Z][a-z]?)(\d*(?:\.\d+)?)")
_ELEMENT_ALT = "|".join(ELEMENT_NAMES)
_ANION_ALT = "|".join(ANIONS)
_NAME = re.compile(rf"\b((?:(?:{_ELEMENT_ALT})\s+){{1,2}}(?:{_ANION_ALT}))\b", re.IGNORECASE)


def is_formula(token: str) -> bool:
    """True for a plausible chemical formula made of element symbols and counts (see module docstring)."""
    parts = _PART.findall(token)
    if not parts or "".join(s + n for s, n in parts) != token:
        return False
    if any(sym not in ELEMENTS for sym, _ in parts):
        return False
    if len({sym for sym, _ in parts}) < 2:  # C2, O2, H2: too often a label or a subscript, not a compound
        return False
    if any(n for _, n in parts):
        return True
    # no counts: only long mixed-case runs (LiFePO, not acronyms such as CBS, DFT, HER)
    return len(parts) >= 3 and not token.isupper()


def find_formulas(text: str) -> list[str]:
    """Formulas in ``text``, in order of first appearance."""
    return list(dict.fromkeys(t for t in _FORMULA_TOKEN.findall(text) if is_formula(t)))


def find_names(text: str, known: Iterable[str] = ()) -> list[str]:
    """Compound names in ``text`` (lower-case): element+anion phrases and any of the ``known`` names."""
    found = [m.group(1).lower() for m in _NAME.finditer(text)]
    lowered = text.lower()
    for name in known:
        n = name.lower().strip()
        if n and re.search(r"(?<![\w-])" + re.escape(n) + r"(?![\w-])", lowered):
            found.append(n)
    return list(dict.fromkeys(re.sub(r"\s+", " ", f) for f in found))


def find_mentions(text: str, known: Iterable[str] = ()) -> list[str]:
    """All candidate compound mentions in ``text``: names first, then formulas."""
    return list(dict.fromkeys(find_names(text, known) + find_formulas(text)))
