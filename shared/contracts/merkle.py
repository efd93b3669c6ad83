"""The Merkle tree over a service's event log, exactly as RFC 6962 §2.1 / RFC 9162 §2.1 define it.

Published byte by byte, like the hashing rule, so anyone can recompute a tree head:

- the leaf of the event at global ``position`` with hash ``h`` (64 lowercase hex chars) is
  ``position`` as 8 bytes big-endian unsigned followed by the 32 raw bytes of ``h``
  (:func:`leaf_bytes`);
- a leaf hashes as ``SHA-256(0x00 || leaf)`` and an interior node as
  ``SHA-256(0x01 || left || right)`` (RFC 9162 §2.1.1);
- the tree of ``n`` leaves splits at ``k``, the largest power of two strictly smaller than
  ``n``; the empty tree's hash is ``SHA-256("")``.

:class:`MerkleTree` keeps the hash of every complete, aligned subtree, so a root, an
inclusion proof or a consistency proof for any past size costs O(log n) hashes and lookups.
The verifiers follow RFC 9162 §2.1.3.2 and §2.1.4.2 for callers who hold only a proof.

Pure: standard library only, no I/O.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
"""Bytes in every hash of the tree (SHA-256)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH({}) = SHA-256 of the empty string: the root of the tree of size 0 (RFC 9162 §2.1.1)."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
_MAX_POSITION = 2**64 - 1
_EVENT_HASH = re.compile(r"[0-9a-f]{64}")


def leaf_bytes(position: int, event_hash_hex: str) -> bytes:
    """The 40-byte leaf of an event: ``position`` as uint64 big-endian ‖ its hash's 32 raw bytes."""
    if type(position) is not int:  # bool and int subclasses too
        raise ValueError(f"position must be an integer, got {position!r}")
    if not 0 <= position <= _MAX_POSITION:
        raise ValueError(f"position {position} is outside the range of an unsigned 64-bit integer")
    if not isinstance(event_hash_hex, str) or _EVENT_HASH.fullmatch(event_hash_hex) is None:
        raise ValueError(f"event hash must be 64 lowercase hex characters, got {event_hash_hex!r}")
    return position.to_bytes(8, "big") + bytes.fromhex(event_hash_hex)


def leaf_hash(leaf: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 ‖ d): the hash of one leaf (RFC 9162 §2.1.1)."""
    return hashlib.sha256(_LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 ‖ left ‖ right): the hash of an interior node (RFC 9162 §2.1.1)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def event_leaf_hash(position: int, event_hash_hex: str) -> bytes:
    """The leaf hash of the event at ``position`` with hash ``event_hash_hex``."""
    return leaf_hash(leaf_bytes(position, event_hash_hex))


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n`` >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_hash(value: bytes, what: str) -> bytes:
    if type(value) is bytes and len(value) == HASH_SIZE:
        return value  # the usual case, a digest: nothing to convert
    if not isinstance(value, bytes | bytearray | memoryview):
        raise ValueError(f"{what} must be bytes, got {type(value).__name__}")
    raw = bytes(value)
    if len(raw) != HASH_SIZE:
        raise ValueError(f"{what} must be {HASH_SIZE} bytes, got {len(raw)}")
    return raw


def _check_int(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{what} must not be negative, got {value}")


class MerkleTree:
    """An append-only Merkle tree (RFC 9162 §2.1) that answers for every size it has had.

    ``_levels[0]`` holds the leaf hashes; ``_levels[k][j]`` the hash of the complete subtree
    of the 2**k leaves starting at ``j * 2**k``, appended as soon as its last leaf arrives.
    Any range the RFC's recursion visits is either such a subtree (a lookup) or a suffix
    ``D[x:n]`` on the right edge of the tree of size ``n``; the hashes of those suffixes are
    folded once per call from the O(log n) complete subtrees that make up ``D[0:n]``.

    Not safe for concurrent mutation: the owner serialises appends.
    """

    __slots__ = ("_levels",)

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [[]]
        self.extend(leaf_hashes)

    @property
    def size(self) -> int:
        """The number of leaves appended so far."""
        return len(self._levels[0])

    def append(self, leaf_hash: bytes) -> int:
        """Append one leaf hash (see :func:`leaf_hash`); return the new size."""
        node = _check_hash(leaf_hash, "leaf hash")
        levels = self._levels
        level = 0
        levels[0].append(node)
        # A node with an odd index completes its parent: hash the pair and carry upwards.
        while len(levels[level]) % 2 == 0:
            row = levels[level]
            node = node_hash(row[-2], row[-1])
            level += 1
            if level == len(levels):
                levels.append([])
            levels[level].append(node)
        return len(levels[0])

    def extend(self, leaf_hashes: Iterable[bytes]) -> int:
        """Append leaf hashes in order; return the new size."""
        for value in leaf_hashes:
            self.append(value)
        return self.size

    def leaf(self, index: int) -> bytes:
        """The hash of leaf ``index``."""
        _check_int(index, "leaf index")
        if index >= self.size:
            raise ValueError(f"leaf index {index} is not below the tree size {self.size}")
        return self._levels[0][index]

    def root(self, n: int | None = None) -> bytes:
        """MTH(D[0:n]), the tree head at size ``n`` (default: the current size), RFC 9162 §2.1.1."""
        n = self._tree_size(n)
        if n == 0:
            return EMPTY_ROOT
        return self._suffixes(n)[0]

    def inclusion_proof(self, index: int, n: int | None = None) -> list[bytes]:
        """PATH(index, D[0:n]): the audit path of leaf ``index`` in the tree of size ``n``.

        RFC 9162 §2.1.3.1 (RFC 6962 §2.1.1); the sibling nearest the leaf comes first.
        """
        n = self._tree_size(n)
        _check_int(index, "leaf index")
        if index >= n:
            raise ValueError(f"leaf index {index} is not below the tree size {n}")
        suffixes = self._suffixes(n)
        path: list[bytes] = []
        start, end = 0, n
        # Walk down from the root; the RFC's recursion appends on the way back up.
        while end - start > 1:
            k = _split(end - start)
            if index < start + k:
                path.append(self._range(start + k, end, n, suffixes))
                end = start + k
            else:
                path.append(self._range(start, start + k, n, suffixes))
                start += k
        path.reverse()
        return path

    def consistency_proof(self, m: int, n: int | None = None) -> list[bytes]:
        """PROOF(m, D[0:n]): proves the tree of size ``m`` is a prefix of the tree of size ``n``.

        RFC 9162 §2.1.4.1 (RFC 6962 §2.1.2) defines PROOF for 0 < m < n. For m == n it is
        SUBPROOF(m, D[m], true) = {}: the empty list. For m == 0 the RFC defines nothing: the
        empty tree's head is the constant :data:`EMPTY_ROOT` and is a prefix of every tree, so
        there is nothing to prove and the proof is the empty list too (what
        :func:`verify_consistency` accepts for a first size of 0).
        """
        n = self._tree_size(n)
        _check_int(m, "first tree size")
        if m > n:
            raise ValueError(f"first tree size {m} is larger than the second tree size {n}")
        if m == 0 or m == n:
            return []
        suffixes = self._suffixes(n)
        tail: list[bytes] = []
        start, end, known = 0, n, True
        while m != end:
            k = _split(end - start)
            if m <= start + k:
                tail.append(self._range(start + k, end, n, suffixes))
                end = start + k
            else:
                tail.append(self._range(start, start + k, n, suffixes))
                start += k
                known = False
        # SUBPROOF(m, D[m], true) = {} ; SUBPROOF(m, D[m], false) = {MTH(D[m])}.
        proof = [] if known else [self._range(start, end, n, suffixes)]
        proof.extend(reversed(tail))
        return proof

    def _tree_size(self, n: int | None) -> int:
        if n is None:
            return self.size
        _check_int(n, "tree size")
        if n > self.size:
            raise ValueError(f"tree size {n} exceeds the {self.size} leaves appended")
        return n

    def _suffixes(self, n: int) -> dict[int, bytes]:
        """MTH(D[x:n]) for each ``x`` where a complete subtree of D[0:n] starts (``n`` >= 1).

        D[0:n] is the complete subtrees given by the binary digits of ``n``, largest first;
        folding them from the right costs popcount(n) - 1 hashes.
        """
        pieces: list[tuple[int, bytes]] = []
        start = 0
        for level in range(n.bit_length() - 1, -1, -1):
            if n >> level & 1:
                pieces.append((start, self._levels[level][start >> level]))
                start += 1 << level
        suffixes: dict[int, bytes] = {}
        acc: bytes | None = None
        for start, node in reversed(pieces):
            acc = node if acc is None else node_hash(node, acc)
            suffixes[start] = acc
        return suffixes

    def _range(self, start: int, end: int, n: int, suffixes: dict[int, bytes]) -> bytes:
        """MTH(D[start:end]) for a range the RFC's recursion visits in the tree of size ``n``."""
        width = end - start
        if width & (width - 1) == 0 and start % width == 0:
            level = width.bit_length() - 1
            return self._levels[level][start >> level]
        assert end == n, "an incomplete subtree lies on the right edge"
        return suffixes[start]


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``proof`` puts ``leaf_hash`` at ``index`` in the tree of ``tree_size`` and ``root``.

    RFC 9162 §2.1.3.2. The tree size must come from the signed tree head the root came
    from: as in the RFC, a path does not itself commit to the size (the path of leaf 0 in a
    tree of 3 also fits a claimed size of 4). Malformed input is a failed verification.
    """
    if not _is_hash(leaf_hash) or not _is_hash(root) or not all(_is_hash(p) for p in proof):
        return False
    if not _is_count(index) or not _is_count(tree_size):
        return False
    # 1. leaf_index >= tree_size fails.
    if index >= tree_size:
        return False
    # 2. fn = leaf_index, sn = tree_size - 1; 3. r = hash.
    fn, sn = index, tree_size - 1
    r = bytes(leaf_hash)
    # 4. For each p in the inclusion path:
    for p in proof:
        # a. sn == 0 means the path is longer than the tree is deep.
        if sn == 0:
            return False
        # b. A right child, or the last node of its level: p is on the left.
        if fn & 1 or fn == sn:
            r = node_hash(bytes(p), r)
            # Skip the levels where this node has no right sibling.
            while fn != 0 and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, bytes(p))
        # c.
        fn >>= 1
        sn >>= 1
    # 5. sn must be 0 and r the root.
    return sn == 0 and r == bytes(root)


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """True when ``proof`` shows the tree of size ``first`` is a prefix of that of size ``second``.

    RFC 9162 §2.1.4.2 for 0 < first < second. The RFC leaves the other cases to the
    definition of PROOF (§2.1.4.1); here:

    - ``first == 0``: the proof must be empty and ``first_root`` must be :data:`EMPTY_ROOT`
      (the only head a tree of size 0 can have); if ``second`` is 0 too, so must
      ``second_root``;
    - ``first == second``: the proof must be empty and the two roots equal;
    - ``first > second`` or a negative size: never consistent.

    Malformed input is a failed verification.
    """
    if not _is_hash(first_root) or not _is_hash(second_root):
        return False
    if not all(_is_hash(c) for c in proof):
        return False
    if not _is_count(first) or not _is_count(second) or first > second:
        return False
    if first == 0:
        return (
            not proof
            and bytes(first_root) == EMPTY_ROOT
            and (second > 0 or bytes(second_root) == EMPTY_ROOT)
        )
    if first == second:
        return not proof and bytes(first_root) == bytes(second_root)
    # 1. An empty consistency path fails.
    if not proof:
        return False
    path = [bytes(c) for c in proof]
    # 2. If first is an exact power of 2, prepend first_hash.
    if first & (first - 1) == 0:
        path.insert(0, bytes(first_root))
    # 3. fn = first - 1, sn = second - 1.
    fn, sn = first - 1, second - 1
    # 4. While LSB(fn) is set, right-shift fn and sn.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5. fr = sr = the first value of the path.
    fr = sr = path[0]
    # 6. For each subsequent value c:
    for c in path[1:]:
        # a.
        if sn == 0:
            return False
        # b.
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn != 0 and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        # c.
        fn >>= 1
        sn >>= 1
    # 7. fr must be first_hash, sr second_hash, and sn 0.
    return fr == bytes(first_root) and sr == bytes(second_root) and sn == 0


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes | bytearray | memoryview) and len(value) == HASH_SIZE


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
