"""Synthetic arXiv windows for the benchmarks: N abstract-length entries in the API's Atom format.

The sentences are assembled from materials/chemistry phrase lists with a seeded RNG, so every run serves the
same bytes. Lengths follow real abstracts (about 120-260 words), so that most fit one 256-token chunk and
some need two, as on arXiv.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.sax.saxutils import escape

MATERIALS = [
    "LiFePO4",
    "LiNi0.8Mn0.1Co0.1O2",
    "Li7La3Zr2O12",
    "TiO2 anatase",
    "CeO2 nanorods",
    "MoS2 monolayers",
    "boron arsenide",
    "graphene oxide",
    "ZIF-8",
    "MOF-808",
    "perovskite CsPbI3",
    "Cu2O nanowires",
    "SrTiO3",
    "hexagonal boron nitride",
    "Bi2Te3",
    "PtSn clusters",
    "Ni/Al2O3",
    "Fe-N-C sites",
    "high-entropy alloys",
    "silicon anodes",
    "sodium layered oxides",
    "Li3YCl6",
    "ScF3 films",
    "silica aerogels",
    "paraffin composites",
    "zeolite H-ZSM-5",
    "Ru/MgO",
    "GaN on diamond",
]
METHODS = [
    "density functional theory",
    "operando X-ray diffraction",
    "molecular dynamics with a machine-learned potential",
    "time-domain thermoreflectance",
    "inelastic neutron scattering",
    "impedance spectroscopy",
    "in situ infrared spectroscopy",
    "transmission electron microscopy",
    "temperature-programmed desorption",
    "the phonon Boltzmann transport equation",
    "coupled-cluster calculations",
    "Raman mapping",
]
PROPERTIES = [
    "ionic conductivity",
    "lattice thermal conductivity",
    "catalytic turnover frequency",
    "capacity retention",
    "Faradaic efficiency",
    "band gap",
    "adsorption energy",
    "thermal stability",
    "selectivity to propylene",
    "oxygen evolution overpotential",
    "thermal boundary conductance",
    "Coulombic efficiency",
    "photoluminescence lifetime",
    "water uptake",
]
VERBS = ["increases", "suppresses", "controls", "stabilises", "limits", "enhances", "tunes", "doubles"]
CAUSES = [
    "oxygen vacancies",
    "grain boundaries",
    "dopant clustering",
    "surface hydroxyls",
    "strain",
    "four-phonon scattering",
    "interfacial disorder",
    "lattice oxygen mobility",
    "cation ordering",
    "solvent co-intercalation",
    "coke deposition",
    "isotope disorder",
]


def _sentence(rng: random.Random) -> str:
    m, p, c = rng.choice(MATERIALS), rng.choice(PROPERTIES), rng.choice(CAUSES)
    forms = [
        f"We study how {c} {rng.choice(VERBS)} the {p} of {m} using {rng.choice(METHODS)}.",
        f"Combining {rng.choice(METHODS)} with {rng.choice(METHODS)}, we find that {c} {rng.choice(VERBS)} "
        f"the {p} by {rng.randint(5, 95)}% at {rng.randint(200, 900)} K.",
        f"The {p} of {m} reaches {rng.uniform(0.1, 900):.2f} in optimised samples, "
        f"{rng.randint(2, 12)} times the value of the reference.",
        f"These results explain earlier reports on {m} and suggest that controlling {c} is a practical route "
        f"to better {p} in {rng.choice(MATERIALS)}.",
        f"Samples prepared by {rng.choice(['ball milling', 'sol-gel synthesis', 'chemical vapour deposition', 'flux growth', 'atomic layer deposition'])} "
        f"show that {c} forms within the first {rng.randint(2, 50)} cycles.",
    ]
    return rng.choice(forms)


def make_abstract(rng: random.Random) -> tuple[str, str]:
    """A (title, abstract) pair of realistic length."""
    title = f"{rng.choice(CAUSES).capitalize()} {rng.choice(VERBS)} the {rng.choice(PROPERTIES)} of {rng.choice(MATERIALS)}"
    target = rng.randint(120, 260)
    words: list[str] = []
    while len(words) < target:
        words.extend(_sentence(rng).split())
    return title, " ".join(words)


def write_window(path: Path, n: int, day: datetime, seed: int = 1234, first_id: int = 10000) -> list[str]:
    """Write an Atom file of ``n`` entries submitted on ``day``; returns their arXiv ids."""
    rng = random.Random(seed)
    entries, ids = [], []
    for i in range(n):
        aid = f"{day:%y%m}.{first_id + i:05d}"
        ts = (day + timedelta(seconds=int(i * 86000 / max(n, 1)))).strftime("%Y-%m-%dT%H:%M:%SZ")
        title, abstract = make_abstract(rng)
        cat = rng.choice(["cond-mat.mtrl-sci", "physics.chem-ph"])
        entries.append(
            f"  <entry>\n    <id>http://arxiv.org/abs/{aid}v1</id>\n    <title>{escape(title)}</title>\n"
            f"    <updated>{ts}</updated>\n"
            f'    <link href="https://arxiv.org/abs/{aid}v1" rel="alternate" type="text/html"/>\n'
            f"    <summary>{escape(abstract)}</summary>\n"
            f'    <category term="{cat}" scheme="http://arxiv.org/schemas/atom"/>\n'
            f'    <published>{ts}</published>\n    <arxiv:primary_category term="{cat}"/>\n'
            f"    <author>\n      <name>Bench Author {i}</name>\n    </author>\n  </entry>\n"
        )
        ids.append(aid)
    head = (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        '<feed xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/" '
        'xmlns:arxiv="http://arxiv.org/schemas/atom" xmlns="http://www.w3.org/2005/Atom">\n'
        f"  <id>https://arxiv.org/api/cbnano-bench</id>\n  <title>bench window</title>\n"
        f"  <updated>{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}</updated>\n"
        f"  <opensearch:totalResults>{n}</opensearch:totalResults>\n"
    )
    path.write_text(head + "".join(entries) + "</feed>\n")
    return ids
