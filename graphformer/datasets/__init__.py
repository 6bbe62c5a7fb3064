from .text import (  # noqa: F401
    STORY_SEPARATOR, BinCorpus, CharTokenizer, Corpus, TextCorpus, generate_stories,
    load_corpus,
)
from .split import stratified_split  # noqa: F401
from .oversquash import (  # noqa: F401
    CliquePathTransfer, CrossedRingTransfer, RingTransfer, TreeNeighborsMatch,
)
from .causal import (  # noqa: F401
    CopyFirstToken, CopyLastToken, CountOnes, causal_graph,
)
from .corpora import CORPORA, PublicCorpus, prepare_corpus  # noqa: F401
from .molecules import (  # noqa: F401
    MolecularRegression, penalized_logp, smiles_to_graph,
)
