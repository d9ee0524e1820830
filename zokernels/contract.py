"""The counter contract: the single definition of zokernels' randomness.

Every backend implements exactly this; tests hold them to it.

* Generator: Philox4x32-10 as in Random123 (Salmon et al., SC'11). The 64-bit ``seed`` is the key
  ``(seed mod 2**32, seed >> 32)``.
* Gaussian: element ``i`` (int64 index in the full, unsharded tensor) of tensor ``tensor_id`` in
  direction ``stream`` uses counter ``(lo32(i // 4), hi32(i // 4), stream, tensor_id)`` -> words
  ``x0..x3``; ``u_j = (2 * (x_j >> 9) + 1) * 2**-24`` (exact in fp32, strictly inside (0, 1));
  ``r = sqrt(-2 ln u0)``, ``n0 = r cos(2 pi u1)``, ``n1 = r sin(2 pi u1)``; likewise ``(u2, u3) -> n2, n3``;
  element ``i`` takes ``n_(i mod 4)``. One Philox call feeds four elements.
* Rademacher: counter ``(lo32(i // 128), hi32(i // 128), stream, tensor_id)``; element ``i`` is +1 if bit
  ``i mod 32`` of word ``x_((i mod 128) // 32)`` is set, else -1.
* Streams: directions use ``0 <= stream < 2**31``. Stream words ``2**31 .. 2**32 - 1`` are reserved for
  the library; stochastic rounding takes its bits from stream ``SR_STREAM = 2**32 - 1``: element ``i``
  uses 16 bits of counter ``(lo32(i // 8), hi32(i // 8), SR_STREAM, tensor_id)`` under the key of
  ``rounding_seed`` (default: the call's seed): with ``h = i mod 8``, bits ``16 (h mod 2) .. + 15`` of word
  ``x_(h // 2)`` (element 8u takes the low half of x0, 8u + 1 its high half, ...). They are the rounding word's
  top 16 bits (its low 16 bits are zero). One Philox call feeds eight elements: 16 bits are exactly the bits
  that bf16 drops from fp32. No direction can collide with the stream.
* Invariance: the value at element ``i`` depends only on (seed, stream, tensor_id, i): not on block size,
  grid, backend, device, dtype or sharding (a shard holding elements ``[a, b)`` passes ``offset=a``).
"""

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
PHILOX_ROUNDS = 10

MASK32 = 0xFFFFFFFF
MAX_SEED = 2**64  # seeds live in [0, 2**64)
MAX_STREAM = 2**31  # direction streams live in [0, 2**31)
MAX_TENSOR_ID = 2**32
MAX_INDEX = 2**62  # element indices (offset + numel) stay below this
SR_STREAM = 2**32 - 1  # reserved stream word for stochastic-rounding bits
ROUNDING_UNIT = 8  # elements fed by one Philox call of stochastic-rounding bits

GAUSSIAN_UNIT = 4  # elements fed by one Philox call
RADEMACHER_UNIT = 128
DISTRIBUTIONS = ("gaussian", "rademacher")
ROUNDINGS = ("nearest", "stochastic")


def split_seed(seed: int) -> tuple[int, int]:
    """Key words (k0, k1) of a 64-bit seed."""
    return seed & MASK32, seed >> 32


def unit_of(dist: str) -> int:
    return GAUSSIAN_UNIT if dist == "gaussian" else RADEMACHER_UNIT
