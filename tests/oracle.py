"""An independent scalar Python implementation of the counter contract (Random123's definition, written
from the spec), used to check the backends at a handful of elements, including indices past 2**32."""
import math

M0, M1, W0, W1, MASK = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85, 0xFFFFFFFF


def philox(ctr, key):
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for r in range(10):
        if r:
            k0, k1 = (k0 + W0) & MASK, (k1 + W1) & MASK
        p0, p1 = M0 * c0, M1 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0) & MASK, p1 & MASK, ((p0 >> 32) ^ c3 ^ k1) & MASK, p0 & MASK
    return c0, c1, c2, c3


def gaussian(seed, stream, tensor_id, i):
    x = philox(((i // 4) & MASK, (i // 4) >> 32, stream, tensor_id), (seed & MASK, seed >> 32))
    u = [(2 * (w >> 9) + 1) * 2.0**-24 for w in x]
    j = i % 4
    r = math.sqrt(-2.0 * math.log(u[2 * (j // 2)]))
    angle = 2.0 * math.pi * u[2 * (j // 2) + 1]
    return r * (math.cos(angle) if j % 2 == 0 else math.sin(angle))


def rademacher(seed, stream, tensor_id, i):
    x = philox(((i // 128) & MASK, (i // 128) >> 32, stream, tensor_id), (seed & MASK, seed >> 32))
    return 1.0 if (x[(i % 128) // 32] >> (i % 32)) & 1 else -1.0


def rounding_bits(rounding_seed, tensor_id, i):
    """The 16 stochastic-rounding bits of element i: half i % 2 of word (i % 8) // 2 of the reserved stream's
    counter (i // 8, 2**32 - 1, tensor_id)."""
    x = philox(((i // 8) & MASK, (i // 8) >> 32, 0xFFFFFFFF, tensor_id), (rounding_seed & MASK, rounding_seed >> 32))
    word = x[(i % 8) // 2]
    return word >> 16 if i % 2 else word & 0xFFFF
