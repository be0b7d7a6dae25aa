"""Link report text to graph concepts: mention detection, scispacy EntityLinker, ConText.

Pipeline (no model download): blank spaCy English → sentencizer → token norms (lower case,
singular) → scispacy AbbreviationDetector → EntityRuler over every KB alias, matched on the
singular norms (so "opacities" matches the alias "opacity") → short forms of detected
abbreviations become mentions of their long form's concept → scispacy EntityLinker, whose
candidates come from a char-3-gram TF-IDF + nmslib index over the aliases, stored in
scispacy's LinkerPaths layout (built here: scispacy 0.6.2's builder needs scipy<1.11 and
its min_df=10 drops most n-grams of a small KB) → negation/uncertainty (knowledge.context).

Word indices: positions in the report's word list, which is ``re.findall(r"\\w+", s.lower())``
over each sentence, counted across the whole report (MGCA's preprocessing); since no
``\\w+`` run spans a sentence boundary this equals ``re.finditer(r"\\w+", report)``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import networkx as nx

from knowledge import context
from knowledge.graph import graph_fingerprint, load_graph

log = logging.getLogger(__name__)
WORD = re.compile(r"\w+")
_IRREGULAR = {"vertebrae": "vertebra", "bullae": "bulla", "bullas": "bulla", "hila": "hilum",
              "apices": "apex", "pleurae": "pleura", "mediastina": "mediastinum", "lungs": "lung",
              "metastases": "metastasis", "diagnoses": "diagnosis", "stenoses": "stenosis",
              "bronchi": "bronchus", "axillae": "axilla", "costophrenic": "costophrenic"}
_KEEP = ("ss", "us", "is", "as", "os", "ys")


def singular(word: str) -> str:
    """Cheap English singular for matching ("opacities" → "opacity", "effusions" → "effusion")."""
    w = word.lower()
    if w in _IRREGULAR:
        return _IRREGULAR[w]
    if len(w) <= 3 or w.endswith(_KEEP):
        return w
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith(("sses", "xes", "ches", "shes")):
        return w[:-2]
    if w.endswith("s"):
        return w[:-1]
    return w


@dataclasses.dataclass
class Mention:
    """One linked concept mention. start/end: character offsets into the report."""

    start: int
    end: int
    text: str
    cui: str
    score: float
    negated: bool
    uncertain: bool
    sentence_index: int
    word_indices: list[int]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- candidate index (LinkerPaths)

def _entities(g: nx.MultiDiGraph):
    from scispacy.linking_utils import Entity
    for cui, d in g.nodes(data=True):
        aliases = sorted({a.lower() for a in d.get("aliases", [])} | {d["name"].lower()})
        yield Entity(cui, d["name"].lower(), aliases, list(d.get("tuis", [])), d.get("definition") or None)


def build_index(g: nx.MultiDiGraph, out_dir: Path) -> Path:
    """Write tfidf_vectorizer.joblib, tfidf_vectors_sparse.npz, concept_aliases.json and
    nmslib_index.bin (scispacy's LinkerPaths layout) for the aliases of ``g``."""
    import joblib
    import nmslib
    import numpy as np
    import scipy.sparse
    from sklearn.feature_extraction.text import TfidfVectorizer

    out_dir.mkdir(parents=True, exist_ok=True)
    aliases = sorted({alias for entity in _entities(g) for alias in entity.aliases})
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 3), min_df=1, dtype=np.float32)
    vectors = vectorizer.fit_transform(aliases)
    nonempty = np.asarray(vectors.sum(axis=1)).ravel() != 0
    aliases = [a for a, keep in zip(aliases, nonempty) if keep]
    vectors = vectors[nonempty].astype(np.float32)
    joblib.dump(vectorizer, out_dir / "tfidf_vectorizer.joblib")
    scipy.sparse.save_npz(out_dir / "tfidf_vectors_sparse.npz", vectors)  # float32: scipy>=1.11
    (out_dir / "concept_aliases.json").write_text(json.dumps(aliases))
    index = nmslib.init(method="hnsw", space="cosinesimil_sparse", data_type=nmslib.DataType.SPARSE_VECTOR)
    index.addDataPointBatch(vectors)
    index.createIndex({"M": 32, "efConstruction": 200, "post": 0, "indexThreadQty": 1}, print_progress=False)
    index.saveIndex(str(out_dir / "nmslib_index.bin"))
    (out_dir / "fingerprint.json").write_text(json.dumps({"graph": graph_fingerprint(g),
                                                           "aliases": len(aliases)}))
    return out_dir


def _candidate_generator(g: nx.MultiDiGraph, index_dir: Path):
    from scispacy.candidate_generation import CandidateGenerator, LinkerPaths
    from scispacy.linking_utils import KnowledgeBase

    stamp = index_dir / "fingerprint.json"
    if not stamp.exists() or json.loads(stamp.read_text())["graph"] != graph_fingerprint(g):
        log.info("building linker index for graph %s in %s", graph_fingerprint(g), index_dir)
        build_index(g, index_dir)
    paths = LinkerPaths.from_directory(index_dir)
    return CandidateGenerator(ann_index=paths.get_ann_index(ef_search=100),
                              tfidf_vectorizer=paths.get_tfidf_vectorizer(),
                              ann_concept_aliases_list=paths.get_concept_aliases(),
                              kb=KnowledgeBase(list(_entities(g))))


# ---------------------------------------------------------------- spaCy pipeline

def _register_components() -> None:
    from spacy.language import Language
    from spacy.tokens import Span

    if "kgvlp_norms" in Language.factories:
        return

    @Language.component("kgvlp_norms")
    def set_norms(doc):
        for token in doc:
            token.norm_ = singular(token.lower_)
        return doc

    @Language.component("kgvlp_abbreviations")
    def abbreviation_mentions(doc):
        ents = list(doc.ents)
        taken = {i for e in ents for i in range(e.start, e.end)}
        for short in getattr(doc._, "abbreviations", []):
            long_form = short._.long_form
            if not isinstance(long_form, Span):
                continue
            match = next((e for e in ents if e.start < long_form.end and long_form.start < e.end), None)
            if match is None or any(i in taken for i in range(short.start, short.end)):
                continue
            ents.append(Span(doc, short.start, short.end, label=match.label_, span_id=match.ent_id_))
            taken.update(range(short.start, short.end))
        doc.ents = sorted(ents, key=lambda e: e.start)
        return doc


def _pipeline(g: nx.MultiDiGraph):
    import spacy
    import scispacy.abbreviation  # noqa: F401  registers "abbreviation_detector"

    _register_components()
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("kgvlp_norms")
    nlp.add_pipe("abbreviation_detector")
    ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "NORM", "validate": False})
    patterns = []
    for cui, d in g.nodes(data=True):
        for alias in {d["name"].lower(), *(a.lower() for a in d.get("aliases", []))}:
            if len(alias) >= 2 and not alias.isdigit():
                patterns.append({"label": "CONCEPT", "pattern": alias, "id": cui})
    with nlp.select_pipes(disable=["abbreviation_detector"]):
        ruler.add_patterns(patterns)
    nlp.add_pipe("kgvlp_abbreviations")
    return nlp


# ---------------------------------------------------------------- linker

class Linker:
    """Links report text to the concepts of a graph (a MultiDiGraph or a saved graph path).

    index_dir: where the candidate index lives; default ``<graph path>.linker/`` or, for an
    in-memory graph, a folder under the system temp dir named by the graph fingerprint.
    threshold: minimum char-3-gram cosine similarity for EntityLinker candidates.
    """

    def __init__(self, graph: nx.MultiDiGraph | str | Path, index_dir: str | Path | None = None,
                 threshold: float = 0.5):
        from scispacy.linking import EntityLinker

        if isinstance(graph, (str, Path)):
            self.graph_path = Path(graph)
            graph = load_graph(graph)
            default_dir = self.graph_path.with_name(self.graph_path.name + ".linker")
        else:
            import tempfile
            self.graph_path = None
            default_dir = Path(tempfile.gettempdir()) / f"kgvlp-linker-{graph_fingerprint(graph)}"
        self.graph = graph
        self.fingerprint = graph_fingerprint(graph)
        self.index_dir = Path(index_dir) if index_dir else default_dir
        self.candidates = _candidate_generator(graph, self.index_dir)
        self.entity_linker = EntityLinker(candidate_generator=self.candidates, resolve_abbreviations=True,
                                          k=10, threshold=threshold, filter_for_definitions=False,
                                          max_entities_per_mention=5)
        self.nlp = _pipeline(graph)

    def _score(self, text: str, cui: str) -> float:
        [candidates] = self.candidates([text], 10)
        return max((max(c.similarities) for c in candidates if c.concept_id == cui), default=0.0)

    def link(self, text: str) -> list[Mention]:
        import warnings
        with warnings.catch_warnings():  # scispacy's abbreviation matcher warns on every doc
            warnings.simplefilter("ignore", UserWarning)
            doc = self.entity_linker(self.nlp(text))
        words = [m.span() for m in WORD.finditer(text)]
        sentences = list(doc.sents)
        mentions = []
        for s_index, sent in enumerate(sentences):
            ents = [e for e in doc.ents if sent.start <= e.start < sent.end]
            if not ents:
                continue
            tokens = [t.lower_ for t in sent]
            flags = context.assess(tokens, [(e.start - sent.start, e.end - sent.start) for e in ents])
            for ent, (negated, uncertain) in zip(ents, flags):
                ranked = dict(ent._.kb_ents)
                cui = ent.ent_id_ or (ent._.kb_ents[0][0] if ent._.kb_ents else "")
                if not cui:
                    continue
                score = ranked.get(cui, 0.0)
                if score < 0.99:  # plural or abbreviation: also score the normalised surface form
                    score = max(score, self._score(" ".join(t.norm_ for t in ent), cui))
                start, end = ent.start_char, ent.end_char
                mentions.append(Mention(start, end, ent.text, cui, round(float(score), 4), negated,
                                        uncertain, s_index,
                                        [i for i, (a, b) in enumerate(words) if a < end and start < b]))
        return mentions

    def link_many(self, texts, processes: int = 1, cache_dir: str | Path | None = None,
                  progress: bool = True, chunksize: int = 16) -> list[list[Mention]]:
        """Link many reports; see :func:`knowledge.batch.link_many`."""
        from knowledge.batch import link_many
        return link_many(self, texts, processes=processes, cache_dir=cache_dir, progress=progress,
                         chunksize=chunksize)
