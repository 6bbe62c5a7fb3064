from .text import (  # noqa: F401
    STORY_SEPARATOR, BinCorpus, CharTokenizer, Corpus, TextCorpus, generate_stories,
    load_corpus,
)
