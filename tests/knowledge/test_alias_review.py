"""Alias review of the bundled subset: no shared alias phrase, every single-word alias justified."""
import re
from pathlib import Path

import knowledge
from knowledge.linking import Linker, concept_aliases

README = Path(knowledge.bundled_meta_dir()) / "README.md"
GENERIC = {"infection", "infectious process", "process", "density", "disease", "lesion", "change",
           "abnormality", "finding", "collapse", "cavity", "column", "shadow", "marking"}
# a generic word may name the generic concept itself: an unqualified density is an opacity
GENERIC_CONCEPT = {"density": "opacity"}


def _justified_single_words() -> set[str]:
    section = README.read_text(encoding="utf-8").split("## Alias review", 1)[1]
    kept = section.split("Single-word aliases kept:", 1)[1]
    return set(re.findall(r"`([^`\s]+)`", kept))


def test_no_alias_phrase_belongs_to_two_concepts():
    linker = Linker(knowledge.build_graph(tuis=None))

    assert linker.concepts.shared == {}


def test_every_single_word_alias_is_listed_with_a_reason_in_the_readme():
    aliases = concept_aliases(knowledge.build_graph(tuis=None))
    single = {a for names in aliases.values() for a in names if len(a.split()) == 1}

    justified = _justified_single_words()

    assert sorted(single - justified) == [] and sorted(justified - single) == []


def test_generic_words_are_never_an_alias_of_a_specific_concept():
    g = knowledge.build_graph(tuis=None)
    aliases = concept_aliases(g)

    misuse = {(a, g.nodes[cui]["name"]) for cui, names in aliases.items() for a in names
              if a.lower() in GENERIC and a.lower() != g.nodes[cui]["name"].lower()
              and GENERIC_CONCEPT.get(a.lower()) != g.nodes[cui]["name"]}

    assert misuse == set()


def test_pneumonia_has_no_infection_alias_and_hyperinflation_is_not_emphysema():
    g = knowledge.build_graph(tuis=None)
    by_name = {d["name"]: [a.lower() for a in d.get("aliases", [])] for _, d in g.nodes(data=True)}

    assert "infection" not in by_name["pneumonia"]
    assert "hyperinflation" not in by_name["emphysema"]
    assert "hyperinflation" in by_name["hyperinflated lungs"]
