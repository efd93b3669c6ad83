"""The Merkle tree of the event log against RFC 6962 / RFC 9162 and published test vectors.

The reference below is written again from the RFC text (the recursive MTH, PATH and PROOF of
RFC 6962 §2.1, and the verifiers of RFC 9162 §2.1.3.2 / §2.1.4.2), on purpose naively and
without importing anything from the module under test except what is being checked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest

from shared.contracts.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    event_leaf_hash,
    leaf_bytes,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

# --- an independent reference, from the RFC text -------------------------------------------


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_leaf(d: bytes) -> bytes:
    return sha256(b"\x00" + d)


def ref_node(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right)


def largest_power_of_two_below(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: Sequence[bytes]) -> bytes:
    """RFC 6962 §2.1: MTH({}) = SHA-256(), MTH({d0}) = SHA-256(0 || d0), else split at k."""
    n = len(d)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return ref_leaf(d[0])
    k = largest_power_of_two_below(n)
    return ref_node(mth(d[:k]), mth(d[k:]))


def path(m: int, d: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.1: PATH(m, D[n])."""
    n = len(d)
    if n == 1:
        return []
    k = largest_power_of_two_below(n)
    if m < k:
        return [*path(m, d[:k]), mth(d[k:])]
    return [*path(m - k, d[k:]), mth(d[:k])]


def proof(m: int, d: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.2: PROOF(m, D[n]) = SUBPROOF(m, D[n], true); m == n gives {}."""
    return subproof(m, d, True)


def subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = largest_power_of_two_below(n)
    if m <= k:
        return [*subproof(m, d[:k], b), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


def ref_verify_inclusion(
    leaf: bytes, leaf_index: int, tree_size: int, inclusion_path: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2, step by step."""
    if leaf_index >= tree_size:
        return False
    fn, sn = leaf_index, tree_size - 1
    r = leaf
    for p in inclusion_path:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = ref_node(p, r)
            if fn % 2 == 0:
                while not (fn % 2 == 1 or fn == 0):
                    fn //= 2
                    sn //= 2
        else:
            r = ref_node(r, p)
        fn //= 2
        sn //= 2
    return sn == 0 and r == root


def ref_verify_consistency(
    first: int,
    second: int,
    first_hash: bytes,
    second_hash: bytes,
    consistency_path: Sequence[bytes],
) -> bool:
    """RFC 9162 §2.1.4.2, step by step, for 0 < first < second.

    Equal sizes are consistent when the heads are equal and the proof is empty (PROOF's
    SUBPROOF(m, D[m], true) = {}).
    """
    if first == second:
        return not consistency_path and first_hash == second_hash
    if not 0 < first < second:
        return False
    if len(consistency_path) == 0:
        return False
    items = list(consistency_path)
    if first & (first - 1) == 0:
        items = [first_hash, *items]
    fn, sn = first - 1, second - 1
    while fn % 2 == 1:
        fn //= 2
        sn //= 2
    fr = sr = items[0]
    for c in items[1:]:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            fr = ref_node(c, fr)
            sr = ref_node(c, sr)
            if fn % 2 == 0:
                while not (fn % 2 == 1 or fn == 0):
                    fn //= 2
                    sn //= 2
        else:
            sr = ref_node(sr, c)
        fn //= 2
        sn //= 2
    return fr == first_hash and sr == second_hash and sn == 0


# --- fixtures -------------------------------------------------------------------------------

INPUTS = [f"event-{i}".encode() for i in range(70)]


def tree_of(inputs: Sequence[bytes]) -> MerkleTree:
    tree = MerkleTree()
    for d in inputs:
        tree.append(ref_leaf(d))
    return tree


@pytest.fixture(scope="module")
def tree70() -> MerkleTree:
    return tree_of(INPUTS)


def flipped(nodes: Sequence[bytes], i: int) -> list[bytes]:
    out = list(nodes)
    out[i] = bytes([out[i][0] ^ 0x08]) + out[i][1:]
    return out


# --- hashing primitives ---------------------------------------------------------------------


def test_leaf_and_node_hashes_carry_the_rfc_domain_prefixes() -> None:
    left, right = sha256(b"l"), sha256(b"r")
    assert leaf_hash(b"abc") == sha256(b"\x00abc")
    assert node_hash(left, right) == sha256(b"\x01" + left + right)
    assert sha256(b"") == EMPTY_ROOT


def test_leaf_bytes_are_the_position_big_endian_then_the_raw_hash() -> None:
    event_hash = "ab" * 32
    leaf = leaf_bytes(1, event_hash)
    assert leaf == b"\x00\x00\x00\x00\x00\x00\x00\x01" + bytes.fromhex(event_hash)
    assert len(leaf) == 40
    assert leaf_bytes(0, "0" * 64) == bytes(40)
    assert leaf_bytes(2**64 - 1, "f" * 64) == b"\xff" * 40
    assert leaf_bytes(0x0102030405060708, event_hash)[:8] == bytes([1, 2, 3, 4, 5, 6, 7, 8])
    assert event_leaf_hash(1, event_hash) == sha256(b"\x00" + leaf)


@pytest.mark.parametrize("position", [-1, 2**64, 2**70])
def test_leaf_bytes_refuses_a_position_outside_uint64(position: int) -> None:
    with pytest.raises(ValueError, match="position"):
        leaf_bytes(position, "ab" * 32)


@pytest.mark.parametrize(
    "event_hash",
    ["AB" * 32, "ab" * 31, "ab" * 33, "g" * 64, "", "ab" * 31 + "a ", "0x" + "ab" * 31],
)
def test_leaf_bytes_refuses_a_hash_that_is_not_64_lowercase_hex_chars(event_hash: str) -> None:
    with pytest.raises(ValueError, match="64 lowercase hex"):
        leaf_bytes(1, event_hash)


def test_leaf_bytes_refuses_a_hash_given_as_bytes() -> None:
    with pytest.raises(ValueError, match="64 lowercase hex"):
        leaf_bytes(1, b"ab" * 32)  # type: ignore[arg-type]


# --- published test vectors -----------------------------------------------------------------

# The RFC 6962 test leaves and tree heads used by the Certificate Transparency, Trillian and
# transparency-dev suites: google/trillian merkle/testonly/constants.go (LeafInputs,
# NodeHashes, RootHashes) and transparency-dev/merkle proof/verify_test.go (roots,
# inclusionProofs, consistencyProofs).
VECTOR_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
VECTOR_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
VECTOR_LEAF_HASHES = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
]
# transparency-dev/merkle proof/verify_test.go lists inclusion proofs by 1-based leaf number;
# here they are 0-based leaf indices.
VECTOR_INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (0, 1, []),
]
VECTOR_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]


def test_published_rfc6962_roots_for_sizes_0_to_8() -> None:
    tree = MerkleTree()
    assert tree.root(0).hex() == VECTOR_ROOTS[0]
    for size, data in enumerate(VECTOR_LEAVES, start=1):
        assert tree.append(leaf_hash(data)) == size
        assert tree.leaf(size - 1).hex() == VECTOR_LEAF_HASHES[size - 1]
        assert tree.root().hex() == VECTOR_ROOTS[size]
    # And every past size, asked of the full tree.
    assert [tree.root(n).hex() for n in range(9)] == VECTOR_ROOTS
    # The reference agrees with the vectors too, so it is a fair judge below.
    assert [mth(VECTOR_LEAVES[:n]).hex() for n in range(9)] == VECTOR_ROOTS


@pytest.mark.parametrize(("index", "size", "expected"), VECTOR_INCLUSION)
def test_published_inclusion_proofs(index: int, size: int, expected: list[str]) -> None:
    tree = MerkleTree(leaf_hash(d) for d in VECTOR_LEAVES)
    got = tree.inclusion_proof(index, size)
    assert [node.hex() for node in got] == expected
    root = bytes.fromhex(VECTOR_ROOTS[size])
    assert verify_inclusion(leaf_hash(VECTOR_LEAVES[index]), index, size, got, root)


@pytest.mark.parametrize(("first", "second", "expected"), VECTOR_CONSISTENCY)
def test_published_consistency_proofs(first: int, second: int, expected: list[str]) -> None:
    tree = MerkleTree(leaf_hash(d) for d in VECTOR_LEAVES)
    got = tree.consistency_proof(first, second)
    assert [node.hex() for node in got] == expected
    first_root, second_root = (bytes.fromhex(VECTOR_ROOTS[n]) for n in (first, second))
    assert verify_consistency(first, second, first_root, second_root, got)


def test_the_worked_example_of_rfc6962_section_2_1_3() -> None:
    """The 7-leaf tree drawn in RFC 6962 §2.1.3, with its audit paths and consistency proofs."""
    d = INPUTS[:7]
    a, b, c, dd, e, f, j = (ref_leaf(x) for x in d)
    g, h, i = ref_node(a, b), ref_node(c, dd), ref_node(e, f)
    k, l_ = ref_node(g, h), ref_node(i, j)
    tree = tree_of(d)
    assert tree.root() == ref_node(k, l_)
    assert tree.inclusion_proof(0, 7) == [b, h, l_]
    assert tree.inclusion_proof(3, 7) == [c, g, l_]
    assert tree.inclusion_proof(4, 7) == [f, j, k]
    assert tree.inclusion_proof(6, 7) == [i, k]
    assert tree.consistency_proof(3, 7) == [c, dd, g, l_]
    assert tree.consistency_proof(4, 7) == [l_]
    assert tree.consistency_proof(6, 7) == [i, j, k]


# --- against the reference, exhaustively on small trees -------------------------------------


def test_roots_of_every_size_up_to_70_equal_the_rfc_mth(tree70: MerkleTree) -> None:
    growing = MerkleTree()
    assert growing.root() == mth([]) == EMPTY_ROOT
    for n in range(1, 71):
        growing.append(ref_leaf(INPUTS[n - 1]))
        assert growing.root() == mth(INPUTS[:n]), n
    for n in range(71):
        assert tree70.root(n) == mth(INPUTS[:n]), n


def test_every_inclusion_proof_up_to_40_leaves_is_the_rfc_path_and_verifies(
    tree70: MerkleTree,
) -> None:
    for n in range(1, 41):
        root = mth(INPUTS[:n])
        for index in range(n):
            got = tree70.inclusion_proof(index, n)
            assert got == path(index, INPUTS[:n]), (index, n)
            leaf = ref_leaf(INPUTS[index])
            assert ref_verify_inclusion(leaf, index, n, got, root), (index, n)
            assert verify_inclusion(leaf, index, n, got, root), (index, n)


def test_every_consistency_proof_up_to_40_leaves_is_the_rfc_proof_and_verifies(
    tree70: MerkleTree,
) -> None:
    for n in range(1, 41):
        second_root = mth(INPUTS[:n])
        for m in range(1, n + 1):
            got = tree70.consistency_proof(m, n)
            assert got == proof(m, INPUTS[:n]), (m, n)
            first_root = mth(INPUTS[:m])
            assert ref_verify_consistency(m, n, first_root, second_root, got), (m, n)
            assert verify_consistency(m, n, first_root, second_root, got), (m, n)


def test_a_consistency_proof_from_the_empty_tree_is_empty(tree70: MerkleTree) -> None:
    # RFC 6962 §2.1.2 / RFC 9162 §2.1.4.1 define PROOF(m, D[n]) only for 0 < m < n (and
    # SUBPROOF(m, D[m], true) = {} for m == n); the empty tree's head is the constant
    # SHA-256(""), so nothing is left to prove and the proof is empty.
    for n in range(71):
        assert tree70.consistency_proof(0, n) == []
        assert verify_consistency(0, n, EMPTY_ROOT, tree70.root(n), [])
    assert not verify_consistency(0, 5, tree70.root(5), tree70.root(5), [])
    assert not verify_consistency(0, 5, EMPTY_ROOT, tree70.root(5), [tree70.root(5)])
    assert not verify_consistency(0, 0, EMPTY_ROOT, tree70.root(1), [])


# --- tampering ------------------------------------------------------------------------------


def inclusion_tamperings(
    leaf: bytes, index: int, n: int, nodes: list[bytes], root: bytes
) -> list[tuple[str, tuple[bytes, int, int, list[bytes], bytes]]]:
    cases: list[tuple[str, tuple[bytes, int, int, list[bytes], bytes]]] = []
    for i in range(len(nodes)):
        cases.append((f"flipped node {i}", (leaf, index, n, flipped(nodes, i), root)))
    if nodes:
        cases.append(("last node missing", (leaf, index, n, nodes[:-1], root)))
        cases.append(("first node missing", (leaf, index, n, nodes[1:], root)))
    cases.append(("extra node", (leaf, index, n, [*nodes, root], root)))
    cases.append(("node prepended", (leaf, index, n, [root, *nodes], root)))
    cases.append(("wrong leaf", (sha256(b"other"), index, n, nodes, root)))
    cases.append(("wrong root", (leaf, index, n, nodes, sha256(b"other"))))
    for other in (index - 1, index + 1, index ^ 2):
        if other >= 0 and other != index:
            cases.append((f"index {other}", (leaf, other, n, nodes, root)))
    # A size with a different path shape; n ± 1 can share the shape (the path of leaf 0 in a
    # tree of 3 fits a tree of 4 too), which is why the size must come from the signed head.
    for other in (n * 2, n // 2):
        cases.append((f"size {other}", (leaf, index, other, nodes, root)))
    return cases


def test_tampered_inclusion_proofs_fail_both_verifiers(tree70: MerkleTree) -> None:
    checked = 0
    for n in range(1, 33):
        root = tree70.root(n)
        for index in range(n):
            leaf = tree70.leaf(index)
            nodes = tree70.inclusion_proof(index, n)
            for what, args in inclusion_tamperings(leaf, index, n, nodes, root):
                assert not ref_verify_inclusion(*args), (what, index, n)
                assert not verify_inclusion(*args), (what, index, n)
                checked += 1
    assert checked > 5000


def test_the_tree_size_is_not_committed_by_an_inclusion_path(tree70: MerkleTree) -> None:
    # As in RFC 9162: the caller must take the size from the signed tree head.
    nodes = tree70.inclusion_proof(0, 3)
    root = tree70.root(3)
    assert ref_verify_inclusion(tree70.leaf(0), 0, 4, nodes, root)
    assert verify_inclusion(tree70.leaf(0), 0, 4, nodes, root)


def consistency_tamperings(
    m: int, n: int, first_root: bytes, second_root: bytes, nodes: list[bytes]
) -> list[tuple[str, tuple[int, int, bytes, bytes, list[bytes]]]]:
    cases: list[tuple[str, tuple[int, int, bytes, bytes, list[bytes]]]] = []
    for i in range(len(nodes)):
        cases.append((f"flipped node {i}", (m, n, first_root, second_root, flipped(nodes, i))))
    cases.append(("last node missing", (m, n, first_root, second_root, nodes[:-1])))
    cases.append(("first node missing", (m, n, first_root, second_root, nodes[1:])))
    cases.append(("empty proof", (m, n, first_root, second_root, [])))
    cases.append(("extra node", (m, n, first_root, second_root, [*nodes, second_root])))
    cases.append(("node prepended", (m, n, first_root, second_root, [first_root, *nodes])))
    cases.append(("swapped roots", (m, n, second_root, first_root, nodes)))
    cases.append(("wrong first root", (m, n, sha256(b"x"), second_root, nodes)))
    cases.append(("wrong second root", (m, n, first_root, sha256(b"x"), nodes)))
    cases.append(("sizes swapped", (n, m, first_root, second_root, nodes)))
    cases.append(("second size doubled", (m, n * 2, first_root, second_root, nodes)))
    return cases


def test_tampered_consistency_proofs_fail_both_verifiers(tree70: MerkleTree) -> None:
    checked = 0
    for n in range(2, 33):
        second_root = tree70.root(n)
        for m in range(1, n):
            first_root = tree70.root(m)
            nodes = tree70.consistency_proof(m, n)
            for what, args in consistency_tamperings(m, n, first_root, second_root, nodes):
                assert not ref_verify_consistency(*args), (what, m, n)
                assert not verify_consistency(*args), (what, m, n)
                checked += 1
    assert checked > 5000


def test_the_module_verifiers_agree_with_the_reference_on_near_misses(
    tree70: MerkleTree,
) -> None:
    """Every valid proof offered under every nearby (index, size) or (first, second)."""
    accepted = 0
    for n in range(1, 25):
        root = tree70.root(n)
        for index in range(n):
            leaf, nodes = tree70.leaf(index), tree70.inclusion_proof(index, n)
            for claimed_index in range(n + 2):
                for claimed_size in range(n + 3):
                    args = (leaf, claimed_index, claimed_size, nodes, root)
                    ours = verify_inclusion(*args)
                    assert ours is ref_verify_inclusion(*args), (index, n, args[1:3])
                    accepted += ours
        for m in range(1, n + 1):
            first_root, nodes = tree70.root(m), tree70.consistency_proof(m, n)
            for claimed_first in range(1, n + 2):
                for claimed_second in range(claimed_first, n + 3):
                    args2 = (claimed_first, claimed_second, first_root, root, nodes)
                    ours = verify_consistency(*args2)
                    assert ours is ref_verify_consistency(*args2), (m, n, args2[:2])
                    accepted += ours
    assert accepted > 0


def test_the_verifiers_refuse_malformed_input_without_raising(tree70: MerkleTree) -> None:
    leaf, nodes, root = tree70.leaf(3), tree70.inclusion_proof(3, 10), tree70.root(10)
    assert verify_inclusion(leaf, 3, 10, nodes, root)
    assert not verify_inclusion(leaf[:31], 3, 10, nodes, root)
    assert not verify_inclusion(leaf, 3, 10, [*nodes[:-1], nodes[-1] + b"\x00"], root)
    assert not verify_inclusion(leaf, -1, 10, nodes, root)
    assert not verify_inclusion(leaf, 3, -10, nodes, root)
    assert not verify_inclusion(leaf, 10, 10, nodes, root)
    assert not verify_inclusion(leaf, 0, 0, [], EMPTY_ROOT)
    proof_ = tree70.consistency_proof(3, 10)
    assert verify_consistency(3, 10, tree70.root(3), root, proof_)
    assert not verify_consistency(-3, 10, tree70.root(3), root, proof_)
    assert not verify_consistency(3, 10, tree70.root(3), root, [b"short", *proof_[1:]])
    assert not verify_consistency(10, 3, root, tree70.root(3), proof_)
    assert not verify_consistency(5, 5, root, tree70.root(5), [])
    assert not verify_consistency(5, 5, tree70.root(5), tree70.root(5), [root])


# --- arguments ------------------------------------------------------------------------------


def test_invalid_arguments_are_refused_with_a_clear_message(tree70: MerkleTree) -> None:
    with pytest.raises(ValueError, match="exceeds the 70 leaves"):
        tree70.root(71)
    with pytest.raises(ValueError, match="must not be negative"):
        tree70.root(-1)
    with pytest.raises(ValueError, match="not below the tree size 10"):
        tree70.inclusion_proof(10, 10)
    with pytest.raises(ValueError, match="must not be negative"):
        tree70.inclusion_proof(-1, 10)
    with pytest.raises(ValueError, match="exceeds"):
        tree70.inclusion_proof(0, 71)
    with pytest.raises(ValueError, match="not below the tree size 0"):
        tree70.inclusion_proof(0, 0)
    with pytest.raises(ValueError, match="larger than the second tree size"):
        tree70.consistency_proof(11, 10)
    with pytest.raises(ValueError, match="must not be negative"):
        tree70.consistency_proof(-1, 10)
    with pytest.raises(ValueError, match="exceeds"):
        tree70.consistency_proof(1, 71)
    with pytest.raises(ValueError, match="not below the tree size 70"):
        tree70.leaf(70)
    with pytest.raises(ValueError, match="must not be negative"):
        tree70.leaf(-1)
    with pytest.raises(ValueError, match="32 bytes"):
        MerkleTree().append(b"\x00" * 31)
    with pytest.raises(ValueError, match="must be bytes"):
        MerkleTree().append("00" * 32)  # type: ignore[arg-type]


def test_the_defaults_answer_for_the_current_size() -> None:
    tree = MerkleTree()
    assert tree.size == 0
    assert tree.extend(ref_leaf(d) for d in INPUTS[:5]) == 5
    assert tree.root() == tree.root(5)
    assert tree.inclusion_proof(2) == tree.inclusion_proof(2, 5)
    assert tree.consistency_proof(3) == tree.consistency_proof(3, 5)
    assert tree.consistency_proof(5) == []


# --- scale ----------------------------------------------------------------------------------


def test_a_tree_of_100000_leaves_answers_proofs_at_its_largest_size() -> None:
    n = 100_000
    inputs = [i.to_bytes(8, "big") for i in range(n)]
    tree = MerkleTree()
    tree.extend(ref_leaf(d) for d in inputs)
    assert tree.size == n
    root = tree.root(n)
    assert root == mth(inputs)
    for index in (0, 1, 65_535, 65_536, 99_998, n - 1):
        nodes = tree.inclusion_proof(index, n)
        assert ref_verify_inclusion(ref_leaf(inputs[index]), index, n, nodes, root)
        assert verify_inclusion(ref_leaf(inputs[index]), index, n, nodes, root)
    for m in (1, 65_536, 65_537, 99_999):
        nodes = tree.consistency_proof(m, n)
        assert ref_verify_consistency(m, n, mth(inputs[:m]), root, nodes)
        assert verify_consistency(m, n, tree.root(m), root, nodes)
