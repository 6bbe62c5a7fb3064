r"""A ZINC-style molecular graph regression set built offline from registry packages.

No package ships ZINC-12k (Dwivedi et al.'s benchmark, 10k/1k/1k molecules of the ZINC
database, target: constrained solubility). :class:`MolecularRegression` builds a set of
the same form from what the field's tools ship:

* the molecules: ZINC molecules from the MOSES benchmark package ``molsets`` (its
  ``train.csv.gz``, 1.58 M SMILES as package data, read by path: ``import moses`` would
  pull in pandas and more), a seeded sample;
* the target: penalised logP (constrained solubility, as ZINC-12k and JT-VAE define it),
  :math:`y = \log P - \mathrm{SA} - \max(0, \ell_{\max} - 6)`, with Crippen's
  :math:`\log P`, the synthetic accessibility score of Ertl & Schuffenhauer (RDKit's
  Contrib ``sascorer``) and :math:`\ell_{\max}` the size of the largest ring of the
  molecule's cycle basis (the long-cycle penalty);
* the graphs: one node per heavy atom with an integer atom type (:data:`ATOM_TYPES`:
  ZINC-12k's 28 types, element, explicit hydrogens and charge, plus one for anything
  else), one edge per bond and direction with an integer bond type (single, double,
  triple on the Kekulé form, as ZINC-12k).

The set is built once (about 20 s) and cached under ``root``; it is never downloaded.
A SMILES that RDKit cannot parse is skipped and counted (``dataset.skipped``).
RDKit and ``molsets`` come with the ``molecules`` extra (``make`` installs ``molsets``
with ``--no-deps``: its pinned dependencies do not build).
"""
from __future__ import annotations

import csv
import functools
import gzip
import importlib.util
import json
import os
import sys
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch_geometric.data import Data, InMemoryDataset

__all__ = ["ATOM_TYPES", "BOND_TYPES", "MolecularRegression", "moses_smiles_path",
           "penalized_logp", "smiles_to_graph", "graph_to_smiles", "build_graphs",
           "require_rdkit", "moses_smiles", "NUM_ATOM_TYPES", "NUM_BOND_TYPES"]

#: ZINC-12k's atom vocabulary (element, explicit hydrogens, charge); index 28 is "other".
ATOM_TYPES = ("C", "O", "N", "F", "C H1", "S", "Cl", "O -", "N H1 +", "Br", "N H3 +",
              "N H2 +", "N +", "N -", "S -", "I", "P", "O H1 +", "N H1 -", "O +", "S +",
              "P H1", "P H2", "C H2 -", "P +", "S H1 +", "C H1 -", "P H1 +")
#: Bond types on the Kekulé form; index 3 is "other".
BOND_TYPES = ("SINGLE", "DOUBLE", "TRIPLE")
NUM_ATOM_TYPES = len(ATOM_TYPES) + 1
NUM_BOND_TYPES = len(BOND_TYPES) + 1
#: Default sizes of the train, validation and test splits (ZINC-12k's).
SIZES = (10000, 1000, 1000)
SPLITS = ("train", "val", "test")

_INSTALL = ("pip install 'graphformer[molecules]' and pip install --no-deps molsets "
            "(`make .venv/bin/.installed` does both)")


def require_rdkit():
    r"""RDKit's ``Chem`` module, or an :class:`ImportError` naming the extra."""
    try:
        from rdkit import Chem, RDLogger
    except ImportError as e:
        raise ImportError(f"molecular graphs need RDKit: {_INSTALL}") from e
    RDLogger.DisableLog("rdApp.*")  # a bad SMILES is counted, not printed
    return Chem


def _sascorer():
    require_rdkit()
    from rdkit.Chem import RDConfig
    path = os.path.join(RDConfig.RDContribDir, "SA_Score")
    if path not in sys.path:
        sys.path.append(path)
    import sascorer  # RDKit's Contrib (Ertl & Schuffenhauer 2009), with its fragment scores
    return sascorer


def moses_smiles_path() -> str:
    r"""The path of MOSES' ``train.csv.gz`` (package data of ``molsets``), found without
    importing the package."""
    spec = importlib.util.find_spec("moses")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the molecules come from the MOSES package molsets: {_INSTALL}")
    path = os.path.join(spec.submodule_search_locations[0], "dataset", "data", "train.csv.gz")
    if not os.path.exists(path):
        raise FileNotFoundError(f"molsets is installed but has no {path}")
    return path


@functools.lru_cache(maxsize=1)
def moses_smiles() -> Tuple[str, ...]:
    r"""The 1.58 M SMILES of MOSES' ``train.csv.gz``, in file order (read once per
    process)."""
    with gzip.open(moses_smiles_path(), "rt") as f:
        rows = csv.reader(f)
        header = next(rows)
        col = header.index("SMILES") if "SMILES" in header else 0
        return tuple(r[col] for r in rows if r)


def penalized_logp(mol) -> float:
    r"""Penalised logP of an RDKit molecule: Crippen logP minus the SA score minus the
    long-cycle penalty (largest ring of the cycle basis beyond 6 atoms).

    Example:
        >>> from rdkit import Chem
        >>> from graphformer.datasets import penalized_logp
        >>> round(penalized_logp(Chem.MolFromSmiles("c1ccccc1O")), 2)   # phenol
        0.22
    """
    from rdkit.Chem import Crippen
    import networkx as nx
    Chem = require_rdkit()
    logp = Crippen.MolLogP(mol)
    sa = _sascorer().calculateScore(mol)
    graph = nx.Graph(Chem.rdmolops.GetAdjacencyMatrix(mol))
    longest = max((len(c) for c in nx.cycle_basis(graph)), default=0)
    return logp - sa - max(0, longest - 6)


def _atom_key(atom) -> str:
    key = atom.GetSymbol()
    if atom.GetNumExplicitHs():
        key += f" H{atom.GetNumExplicitHs()}"
    charge = atom.GetFormalCharge()
    if charge:
        key += " +" if charge > 0 else " -"
    return key


def smiles_to_graph(smiles: str) -> Optional[Data]:
    r"""The graph of a SMILES (``x``: atom types ``[N]``, ``edge_index`` ``[2, 2B]``,
    ``edge_attr``: bond types ``[2B]``, ``y``: penalised logP ``[1]``, ``smiles``), or
    ``None`` when RDKit cannot parse it.

    Example:
        >>> from graphformer.datasets import smiles_to_graph
        >>> data = smiles_to_graph("c1ccccc1O")     # phenol: 6 C and 1 O, 7 bonds
        >>> data.x.tolist(), data.num_edges, round(float(data.y), 2)
        ([0, 0, 0, 0, 0, 0, 1], 14, 0.22)
        >>> smiles_to_graph("not a molecule") is None
        True
    """
    Chem = require_rdkit()
    mol = Chem.MolFromSmiles(smiles) if isinstance(smiles, str) and smiles else None
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    y = penalized_logp(mol)
    kek = Chem.Mol(mol)
    try:
        Chem.Kekulize(kek, clearAromaticFlags=True)
    except Exception:  # noqa: BLE001 (RDKit raises its own KekulizeException)
        return None
    other = len(ATOM_TYPES)
    x = [ATOM_TYPES.index(k) if (k := _atom_key(a)) in ATOM_TYPES else other
         for a in kek.GetAtoms()]
    src, dst, bond = [], [], []
    for b in kek.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        name = str(b.GetBondType())
        t = BOND_TYPES.index(name) if name in BOND_TYPES else len(BOND_TYPES)
        src += [i, j]
        dst += [j, i]
        bond += [t, t]
    return Data(x=torch.tensor(x, dtype=torch.long),
                edge_index=torch.tensor([src, dst], dtype=torch.long).view(2, -1),
                edge_attr=torch.tensor(bond, dtype=torch.long),
                y=torch.tensor([y], dtype=torch.float), smiles=smiles,
                num_nodes=len(x))


def graph_to_smiles(data: Data) -> str:
    r"""The canonical SMILES of a graph of :func:`smiles_to_graph` (atoms of type
    "other" cannot be rebuilt)."""
    Chem = require_rdkit()
    mol = Chem.RWMol()
    for t in data.x.tolist():
        if t >= len(ATOM_TYPES):
            raise ValueError("an atom of type 'other' cannot be rebuilt")
        parts = ATOM_TYPES[t].split()
        atom = Chem.Atom(parts[0])
        for p in parts[1:]:
            if p.startswith("H"):
                atom.SetNumExplicitHs(int(p[1:]))
            else:
                atom.SetFormalCharge(1 if p == "+" else -1)
        mol.AddAtom(atom)
    kinds = {0: Chem.BondType.SINGLE, 1: Chem.BondType.DOUBLE, 2: Chem.BondType.TRIPLE}
    for (i, j), t in zip(data.edge_index.t().tolist(), data.edge_attr.tolist()):
        if i < j:
            mol.AddBond(i, j, kinds[t])
    out = mol.GetMol()
    Chem.SanitizeMol(out)
    return Chem.MolToSmiles(out)


def build_graphs(smiles: Sequence[str], limit: Optional[int] = None,
                 progress: bool = False) -> Tuple[List[Data], int]:
    r"""The graphs of ``smiles`` in order, up to ``limit`` of them, and the number of
    SMILES skipped because RDKit cannot parse them."""
    from tqdm import tqdm
    graphs, skipped = [], 0
    for s in tqdm(smiles, desc="molecules", disable=not progress, total=limit):
        g = smiles_to_graph(s)
        if g is None:
            skipped += 1
            continue
        graphs.append(g)
        if limit is not None and len(graphs) == limit:
            break
    return graphs, skipped


class MolecularRegression(InMemoryDataset):
    r"""ZINC-style graph regression on MOSES' ZINC molecules: penalised logP, integer
    atom (:data:`ATOM_TYPES`, 29) and bond (:data:`BOND_TYPES`, 4) types, splits of
    ``sizes`` (ZINC-12k's 10k/1k/1k by default) drawn with ``seed`` from MOSES' training
    molecules. See the module docstring for how it differs from ZINC-12k.

    Built on first use and cached in ``root/processed``; never downloaded.

    Args:
        root (str): cache folder.
        split (str): ``"train"``, ``"val"`` or ``"test"``.
        sizes ((int, int, int)): split sizes.
        seed (int): which molecules (a seeded permutation of MOSES' 1.58 M).
        walk_length (int): steps of the random-walk structural encoding stored as
            ``random_walk_pe`` (PyG's :class:`AddRandomWalkPE`; 0: none). GraphGPS on
            ZINC: 20.
        transform (callable, optional): PyG's per-access transform.
        progress (bool): show a progress bar (and PyG's "Processing..." lines) while
            building. (default: ``False``)

    Attributes:
        skipped (int): SMILES that RDKit could not parse (skipped when building).

    Example:
        >>> import tempfile
        >>> from graphformer.datasets import MolecularRegression
        >>> root = tempfile.mkdtemp()
        >>> val = MolecularRegression(root, "val", sizes=(20, 5, 5), walk_length=0)
        >>> val, val[0].x.dim(), val[0].y.shape     # atom types [N], penalised logP [1]
        (MolecularRegression(5, sizes=(20, 5, 5)), 1, torch.Size([1]))
    """

    def __init__(self, root: str, split: str = "train", sizes: Sequence[int] = SIZES,
                 seed: int = 0, walk_length: int = 20,
                 transform: Optional[Callable] = None, progress: bool = False) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        sizes = tuple(int(s) for s in sizes)
        if len(sizes) != 3 or min(sizes) < 1:
            raise ValueError(f"sizes must be three positive split sizes, got {sizes}")
        self.sizes, self.seed, self.walk_length = sizes, int(seed), int(walk_length)
        self.progress = progress
        super().__init__(root, transform, log=progress)
        self.load(self.processed_paths[SPLITS.index(split)])
        with open(self.processed_paths[3]) as f:
            self.info = json.load(f)
        self.skipped = int(self.info["skipped"])

    @property
    def raw_file_names(self) -> List[str]:
        return []

    @property
    def processed_file_names(self) -> List[str]:
        tag = f"{'-'.join(map(str, self.sizes))}_seed{self.seed}_rw{self.walk_length}"
        return [f"{s}_{tag}.pt" for s in SPLITS] + [f"info_{tag}.json"]

    def download(self) -> None:  # never: the molecules are package data
        pass

    def process(self) -> None:
        require_rdkit()
        smiles = moses_smiles()
        order = torch.randperm(len(smiles), generator=torch.Generator().manual_seed(self.seed))
        total = sum(self.sizes)
        graphs, skipped = build_graphs((smiles[i] for i in order.tolist()), limit=total,
                                       progress=self.progress)
        if len(graphs) < total:
            raise ValueError(f"only {len(graphs)} of the {total} molecules asked for parse")
        if self.walk_length:
            from torch_geometric.transforms import AddRandomWalkPE
            pe = AddRandomWalkPE(self.walk_length, attr_name="random_walk_pe")
            graphs = [pe(g) for g in graphs]
        start = 0
        for path_out, n in zip(self.processed_paths[:3], self.sizes):
            self.save(graphs[start:start + n], path_out)
            start += n
        ys = torch.cat([g.y for g in graphs[:self.sizes[0]]])
        info = {"source": "molsets train.csv.gz", "molecules_in_source": len(smiles),
                "skipped": skipped, "sizes": list(self.sizes), "seed": self.seed,
                "train_y_mean": float(ys.mean()), "train_y_std": float(ys.std()),
                "mean_atoms": float(sum(g.num_nodes for g in graphs) / len(graphs))}
        tmp = self.processed_paths[3] + ".tmp"
        with open(tmp, "w") as f:
            json.dump(info, f, indent=1)
        os.replace(tmp, self.processed_paths[3])

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({len(self)}, sizes={self.sizes})"

