r"""The molecular data set: SMILES to graph and back, targets equal to RDKit's own
computation on known molecules, unparseable SMILES skipped and counted, the split
deterministic, and the extra named when RDKit or molsets is missing."""
import importlib.util
import os
import sys

import pytest
import torch

from graphformer.datasets import molecules as M

pytest.importorskip("rdkit", reason="RDKit is not installed: pip install "
                                    "'graphformer[molecules]' (the test extra includes it)")
from rdkit import Chem  # noqa: E402
from rdkit.Chem import Crippen, RDConfig  # noqa: E402

HAS_MOSES = importlib.util.find_spec("moses") is not None


def sa_score(mol):
    sys.path.append(os.path.join(RDConfig.RDContribDir, "SA_Score"))
    import sascorer
    return sascorer.calculateScore(mol)


@pytest.mark.parametrize("smiles", ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(Cl)cc1",
                                    "C#CCN1CCCCCCC1", "O=C(O)C1CC1", "C[NH3+]", "CC(=O)[O-]"])
def test_smiles_to_graph_round_trip(smiles):
    g = M.smiles_to_graph(smiles)
    mol = Chem.MolFromSmiles(smiles)
    assert g.num_nodes == mol.GetNumAtoms() and g.edge_index.size(1) == 2 * mol.GetNumBonds()
    assert g.x.dtype == torch.long and g.edge_attr.dtype == torch.long
    assert int(g.x.max()) < M.NUM_ATOM_TYPES and int(g.edge_attr.max()) < M.NUM_BOND_TYPES
    assert M.graph_to_smiles(g) == Chem.MolToSmiles(mol)


def test_targets_equal_rdkits_on_known_molecules():
    for smiles, ring_penalty in [("c1ccccc1", 0), ("C1CCCCCCC1", 2), ("CCCCCC", 0),
                                 ("C1CCCCCCCCC1", 4), ("O=C1CCCCCCN1", 2)]:
        mol = Chem.MolFromSmiles(smiles)
        want = Crippen.MolLogP(mol) - sa_score(mol) - ring_penalty
        assert M.penalized_logp(mol) == pytest.approx(want, abs=1e-9)
        assert float(M.smiles_to_graph(smiles).y) == pytest.approx(want, abs=1e-5)
    # known values: benzene's Crippen logP is 1.6866
    assert Crippen.MolLogP(Chem.MolFromSmiles("c1ccccc1")) == pytest.approx(1.6866, abs=1e-4)


def test_unparseable_smiles_are_skipped_and_counted():
    graphs, skipped = M.build_graphs(["CCO", "C1CC", "not a molecule", "", "c1ccccc1",
                                      "C(C)(C)(C)(C)C"])
    assert [g.smiles for g in graphs] == ["CCO", "c1ccccc1"] and skipped == 4
    graphs, skipped = M.build_graphs(["C1CC", "CCO", "CCN", "CCC"], limit=2)
    assert len(graphs) == 2 and skipped == 1


@pytest.mark.skipif(not HAS_MOSES, reason="molsets is not installed: pip install --no-deps "
                                          "molsets (make .venv/bin/.installed does it)")
def test_split_is_deterministic_and_cached(tmp_path):
    a = M.MolecularRegression(str(tmp_path / "a"), "val", sizes=(6, 4, 3), walk_length=4)
    b = M.MolecularRegression(str(tmp_path / "b"), "val", sizes=(6, 4, 3), walk_length=4)
    assert [g.smiles for g in a] == [g.smiles for g in b] and len(a) == 4
    assert a[0].random_walk_pe.shape == (a[0].num_nodes, 4)
    test = M.MolecularRegression(str(tmp_path / "a"), "test", sizes=(6, 4, 3), walk_length=4)
    train = M.MolecularRegression(str(tmp_path / "a"), "train", sizes=(6, 4, 3),
                                  walk_length=4)
    names = [g.smiles for d in (train, a, test) for g in d]
    assert len(set(names)) == 13  # disjoint splits
    other = M.MolecularRegression(str(tmp_path / "c"), "val", sizes=(6, 4, 3), seed=1,
                                  walk_length=4)
    assert [g.smiles for g in other] != [g.smiles for g in a]
    assert a.skipped == 0


def test_missing_packages_name_the_extra(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"graphformer\[molecules\].*--no-deps molsets"):
        M.moses_smiles_path()
    monkeypatch.setitem(sys.modules, "rdkit", None)
    with pytest.raises(ImportError, match=r"RDKit.*graphformer\[molecules\]"):
        M.require_rdkit()
