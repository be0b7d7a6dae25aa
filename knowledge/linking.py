"""Link report text to graph concepts: alias matching with word variants, then negation/uncertainty.

Pipeline (offline, no model): blank spaCy English tokenizer → sentencizer → each token's
NORM set to its matching key (knowledge.variants: plurals, adjective/participle → noun) →
spaCy ``PhraseMatcher`` on NORM over every alias of every concept (abbreviation aliases
such as "PTX" match case-sensitively) → longest non-overlapping matches become
``doc.ents`` → an abbreviation defined in the text ("chronic obstructive pulmonary disease
(COPD)") links its later uses → heart-size statements become cardiomegaly mentions
(knowledge.statements) → negspacy negation and uncertainty (knowledge.context) → verdicts of
heart-size statements, "<finding>like" words and alternatives ("A or B") set last. An alias
"<qualifier> opacity" of a finding ("nodular opacity") also yields an opacity mention.

There is no index on disk: everything is rebuilt from the graph in memory (about a second
for the bundled subset), so nothing is ever read back from a cache folder.

Word indices: positions in the report's word list, which is ``re.findall(r"\\w+", s.lower())``
over each sentence, counted across the whole report (MGCA's preprocessing); since no
``\\w+`` run spans a sentence boundary this equals ``re.finditer(r"\\w+", report)``.
"""
from __future__ import annotations

import bisect
import collections
import dataclasses
import logging
import math
import re
from pathlib import Path
from typing import Iterable, Sequence

import networkx as nx

from knowledge import context, statements
from knowledge.graph import graph_fingerprint, load_graph
from knowledge.variants import VariantNormalizer, singular  # noqa: F401  (singular: public API)

log = logging.getLogger(__name__)
WORD = re.compile(r"\w+")
CHUNK_CHARS = 20_000  # longer reports are linked in pieces cut at sentence ends (spaCy E088 otherwise)
_ABBREVIATION = re.compile(r"[A-Z][A-Z0-9]{1,5}")
OPACITY_HEADS = ("opacity", "opacification", "density")
HEADS, STATUS = "kgvlp_heads", "kgvlp_status"  # doc.user_data keys set by ConceptMatcher


@dataclasses.dataclass
class Mention:
    """One linked concept mention. start/end: character offsets into the report.
    score: char-3-gram cosine between the surface text and the concept's closest alias."""

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


def concept_aliases(g: nx.MultiDiGraph) -> dict[str, list[str]]:
    """CUI → its preferred name and aliases (as written, duplicates removed)."""
    out = {}
    for cui, d in g.nodes(data=True):
        names = [d["name"], *d.get("aliases", [])]
        out[cui] = list(dict.fromkeys(n.strip() for n in names if len(n.strip()) >= 2 and not n.isdigit()))
    return out


FINDING_TUIS = {"T020", "T033", "T046", "T047", "T190", "T191"}


def qualified_findings(g: nx.MultiDiGraph) -> set[str]:
    """Findings (not devices or anatomy: "metallic density", "bone density") whose
    "<qualifier> opacity" aliases also state an opacity."""
    return {cui for cui, d in g.nodes(data=True) if FINDING_TUIS.intersection(d.get("tuis", ()))}


def is_abbreviation(alias: str) -> bool:
    """Upper-case short forms ("PTX", "COPD") match only as written: "tb"/"dish" are words."""
    return bool(_ABBREVIATION.fullmatch(alias))


def _trigrams(text: str) -> collections.Counter:
    padded = f" {text.lower()} "
    return collections.Counter(padded[i:i + 3] for i in range(len(padded) - 2))


def trigram_cosine(a: str, b: str) -> float:
    ta, tb = _trigrams(a), _trigrams(b)
    dot = sum(n * tb[g] for g, n in ta.items())
    return dot / math.sqrt(sum(n * n for n in ta.values()) * sum(n * n for n in tb.values()) or 1.0)


class ConceptMatcher:
    """Finds alias mentions in a spaCy Doc and stores them as ``doc.ents`` (label CONCEPT,
    ``ent_id_`` = CUI). ``reference=True`` swaps spaCy's PhraseMatcher for a plain scan over
    every word n-gram (the slow path the fast one is checked against)."""

    def __init__(self, nlp, aliases: dict[str, list[str]], reference: bool = False,
                 qualified: set[str] | None = None):
        """qualified: concepts whose alias "<qualifier> opacity/density" also states an opacity
        ("nodular opacity": a nodule and an opacity); default none."""
        from spacy.matcher import PhraseMatcher

        self.vocab = nlp.vocab
        self.reference = reference
        words = {w for names in aliases.values() for n in names for w in WORD.findall(n.lower())}
        self.normalizer = VariantNormalizer(words)
        self.phrases: dict[tuple[str, ...], str] = {}      # matching keys → CUI
        self.abbreviations: dict[str, str] = {}             # exact short form → CUI
        self.aliases = aliases
        self.shared: dict[tuple[str, ...], set[str]] = collections.defaultdict(set)
        preferred = {cui: names[0].lower() for cui, names in aliases.items()}
        for cui in sorted(aliases):
            for alias in aliases[cui]:
                if is_abbreviation(alias):
                    self.abbreviations.setdefault(alias, cui)
                    continue
                key = self.key_of(nlp, alias)
                other = self.phrases.get(key)
                if other is not None and other != cui:
                    self.shared[key].update((cui, other))
                # a phrase several concepts share goes to the one it names (else the lowest CUI)
                if other is None or (preferred[cui] == alias.lower() and preferred[other] != alias.lower()):
                    self.phrases[key] = cui
        self.shared = dict(self.shared)
        if self.shared:
            log.warning("%d alias phrases belong to several concepts: %s", len(self.shared),
                        "; ".join(f"{' '.join(k)}: {sorted(v)}" for k, v in sorted(self.shared.items())))
        self.matcher = PhraseMatcher(nlp.vocab, attr="NORM")
        by_cui = collections.defaultdict(list)
        for key, cui in self.phrases.items():
            by_cui[cui].append(key)
        for cui, keys in by_cui.items():
            self.matcher.add(cui, [self._pattern(nlp, key) for key in keys])
        self.case_matcher = PhraseMatcher(nlp.vocab, attr="ORTH")
        for short, cui in self.abbreviations.items():
            self.case_matcher.add(cui, [nlp.make_doc(short), nlp.make_doc(short + "s")])
        self.max_words = max((len(k) for k in self.phrases), default=1)
        self.cardiomegaly = self.phrases.get(self.key_of(nlp, "cardiomegaly"))
        head_keys = [self.key_of(nlp, w) for w in OPACITY_HEADS]
        self.head_concept = {key: self.phrases[key] for key in head_keys if key in self.phrases}
        self.also_head = {key: self.head_concept[key[-1:]] for key, cui in self.phrases.items()
                          if len(key) > 1 and key[-1:] in self.head_concept and cui in (qualified or ())}

    def key_of(self, nlp, phrase: str) -> tuple[str, ...]:
        """The matching keys of a phrase's words ("Pleural effusions" → ("pleural", "effusion"))."""
        return tuple(self.normalizer.key(t.lower_) for t in nlp.make_doc(phrase.lower()))

    def _pattern(self, nlp, key: tuple[str, ...]):
        from spacy.tokens import Doc
        doc = Doc(nlp.vocab, words=list(key))
        for token in doc:
            token.norm_ = token.text
        return doc

    def _set_norms(self, doc) -> None:
        if self.reference:  # no caches: a fresh normalizer for every document
            fresh = VariantNormalizer(self.normalizer.vocabulary)
            for token in doc:
                token.norm_ = fresh.key(token.lower_)
            return
        key = self.normalizer.key
        for token in doc:
            token.norm_ = key(token.lower_)

    def _candidates(self, doc) -> list[tuple[int, int, str]]:
        """Every (start, end, cui) alias match, overlapping ones included."""
        if self.reference:
            norms = [t.norm_ for t in doc]
            found = [(i, i + n, self.phrases[tuple(norms[i:i + n])])
                     for i in range(len(doc)) for n in range(1, self.max_words + 1)
                     if i + n <= len(doc) and tuple(norms[i:i + n]) in self.phrases]
            words = [t.text for t in doc]
            for short, cui in self.abbreviations.items():
                found += [(i, i + 1, cui) for i, w in enumerate(words) if w in (short, short + "s")]
            return found
        strings = self.vocab.strings
        return [(s, e, strings[m]) for s, e, m in
                [(s, e, m) for m, s, e in self.matcher(doc)] + [(s, e, m) for m, s, e in self.case_matcher(doc)]]

    def __call__(self, doc):
        from spacy.tokens import Span

        self._set_norms(doc)
        chosen, taken = [], set()
        for start, end, cui in sorted(self._candidates(doc), key=lambda c: (c[0] - c[1], c[0], c[2])):
            if not taken.intersection(range(start, end)):
                chosen.append((start, end, cui))
                taken.update(range(start, end))
        chosen += self._defined_abbreviations(doc, chosen, taken)
        chosen, status = self._heart_statements(doc, chosen)
        doc.ents = [Span(doc, s, e, label="CONCEPT", span_id=cui) for s, e, cui in sorted(chosen)]
        doc.user_data[STATUS] = {(doc[s].idx, doc[e - 1].idx + len(doc[e - 1])): v for (s, e), v in status.items()}
        heads = []
        for start, end, cui in chosen:
            head = self.also_head.get(tuple(t.norm_ for t in doc[start:end]))
            if head is not None:
                heads.append((start, end, end - 1, head))
        doc.user_data[HEADS] = heads
        return doc

    def _heart_statements(self, doc, chosen):
        """Heart-size subjects become cardiomegaly mentions (knowledge.statements)."""
        status = {}
        if self.cardiomegaly is None:
            return chosen, status
        for start, end, verdict in statements.heart_size_statements(doc):
            overlapping = [c for c in chosen if c[0] < end and start < c[1]]
            if any(c[0] < start or c[1] > end for c in overlapping):
                continue  # part of a longer phrase: "cardiac pacemaker", "enlarged heart"
            chosen = [c for c in chosen if c not in overlapping] + [(start, end, self.cardiomegaly)]
            status[start, end] = verdict
        return chosen, status

    def resolve(self, doc):
        """After negation/uncertainty: verdicts of heart-size statements, "<finding>like"
        words, then alternatives."""
        status = doc.user_data.get(STATUS, {})
        ents = list(doc.ents)
        for ent in ents:
            verdict = status.get((ent.start_char, ent.end_char))
            if verdict is not None:
                ent._.set(context.NEGATED, verdict == "absent" or (verdict != "uncertain" and ent._.get(context.NEGATED)))
                ent._.set(context.UNCERTAIN, verdict == "uncertain")
        for ent in ents:  # "masslike opacity": resembles a mass
            if any(t.lower_.endswith("like") and t.norm_ != t.lower_ for t in ent):
                ent._.set(context.UNCERTAIN, True)
        for group in statements.alternative_groups(doc, ents):
            for k in group:
                if not ents[k]._.get(context.NEGATED):
                    ents[k]._.set(context.UNCERTAIN, True)
        return doc

    @staticmethod
    def _defined_abbreviations(doc, chosen, taken) -> list[tuple[int, int, str]]:
        """"long form (SHORT)": later uses of SHORT link to the long form's concept."""
        defined = {}
        for start, end, cui in chosen:
            if end + 2 < len(doc) and doc[end].text == "(" and doc[end + 2].text == ")":
                short = doc[end + 1].text
                if _ABBREVIATION.fullmatch(short) and short[0].lower() == doc[start].lower_[0]:
                    defined[short] = cui
        return [(t.i, t.i + 1, defined[t.text]) for t in doc if t.text in defined and t.i not in taken]


def _chunks(text: str, limit: int) -> Iterable[tuple[int, str]]:
    """(offset, piece) with pieces of at most ``limit`` characters, cut after a sentence end
    or else at whitespace, so that no word is split where avoidable."""
    start = 0
    while len(text) - start > limit:
        window = text[start:start + limit]
        cut = max(window.rfind(". "), window.rfind("\n"))
        cut = cut + 1 if cut > 0 else window.rfind(" ")
        cut = cut if cut > 0 else limit
        yield start, text[start:start + cut]
        start += cut
    yield start, text[start:]


class Linker:
    """Links report text to the concepts of a graph (a MultiDiGraph or a saved graph path).

    ``link(text)`` handles one report; ``link_batch(texts)`` is the fast path (tokenizer
    streaming); ``link_many`` adds the per-report cache and worker processes.
    reference: the slow path the fast one is checked against — an n-gram scan instead of the
    PhraseMatcher, no key cache, negspacy's own (quadratic) negex scope loop.
    """

    def __init__(self, graph: nx.MultiDiGraph | str | Path, reference: bool = False):
        import spacy

        self.graph_path = Path(graph) if isinstance(graph, (str, Path)) else None
        self.graph = load_graph(graph) if self.graph_path else graph
        self.fingerprint = graph_fingerprint(self.graph)
        self.nlp = spacy.blank("en")
        self.nlp.max_length = CHUNK_CHARS + 1
        sentencizer = self.nlp.add_pipe("sentencizer")
        self.concepts = ConceptMatcher(self.nlp, concept_aliases(self.graph), reference=reference,
                                       qualified=qualified_findings(self.graph))
        context.add_context(self.nlp, linear=not reference)
        self._steps = [sentencizer, self.concepts] + [proc for name, proc in self.nlp.pipeline
                                                      if name.startswith("kgvlp_")] + [self.concepts.resolve]
        self._scores: dict[tuple[str, str], float] = {}

    @staticmethod
    def needs_chunks(text: str) -> bool:
        return len(text) > CHUNK_CHARS

    def _process(self, doc):
        for step in self._steps:
            doc = step(doc)
        return doc

    def _score(self, surface: str, cui: str) -> float:
        key = (surface.lower(), cui)
        if key not in self._scores:
            self._scores[key] = round(max(trigram_cosine(surface, a) for a in self.concepts.aliases[cui]), 4)
        return self._scores[key]

    def _mentions(self, text: str, pieces: list[tuple[int, object]]) -> list[Mention]:
        word_starts, word_ends = [], []
        for m in WORD.finditer(text):
            word_starts.append(m.start())
            word_ends.append(m.end())
        mentions, sentences_before = [], 0
        for offset, doc in pieces:
            sentence_starts = [s.start for s in doc.sents]
            heads = {(s, e): (h, cui) for s, e, h, cui in doc.user_data.get(HEADS, ())}
            for ent in doc.ents:
                negated, uncertain = bool(ent._.get(context.NEGATED)), bool(ent._.get(context.UNCERTAIN))
                sentence = sentences_before + bisect.bisect_right(sentence_starts, ent.start) - 1
                spans = [(ent, ent.id_)]
                if (ent.start, ent.end) in heads:  # "nodular opacity": also an opacity
                    head, cui = heads[ent.start, ent.end]
                    spans.append((doc[head:ent.end], cui))
                for span, cui in spans:
                    start, end = offset + span.start_char, offset + span.end_char
                    first = bisect.bisect_right(word_ends, start)
                    last = bisect.bisect_left(word_starts, end)
                    mentions.append(Mention(start, end, span.text, cui, self._score(span.text, cui), negated,
                                            uncertain, sentence, list(range(first, last))))
            sentences_before += len(sentence_starts)
        return mentions

    def link(self, text: str) -> list[Mention]:
        """Mentions of one report (longer than CHUNK_CHARS: linked piece by piece)."""
        pieces = [(offset, self._process(self.nlp.make_doc(piece))) for offset, piece in _chunks(text, CHUNK_CHARS)]
        return self._mentions(text, pieces)

    def link_batch(self, texts: Sequence[str], batch_size: int = 256) -> list[list[Mention]]:
        """Same result as ``[self.link(t) for t in texts]``, with the tokenizer streaming."""
        out: list[list[Mention] | None] = [None] * len(texts)
        short = [i for i, t in enumerate(texts) if not self.needs_chunks(t)]
        for i, doc in zip(short, self.nlp.tokenizer.pipe((texts[i] for i in short), batch_size=batch_size)):
            out[i] = self._mentions(texts[i], [(0, self._process(doc))])
        for i, t in enumerate(texts):
            if out[i] is None:
                out[i] = self.link(t)
        return out

    def link_many(self, texts, processes: int = 1, cache_dir: str | Path | None = None,
                  progress: bool = True, chunksize: int = 256) -> list[list[Mention]]:
        """Link many reports; see :func:`knowledge.batch.link_many`."""
        from knowledge.batch import link_many
        return link_many(self, texts, processes=processes, cache_dir=cache_dir, progress=progress,
                         chunksize=chunksize)
