"""One seed per (seed, stream): the reproducibility contract of gradwise.data."""

from __future__ import annotations

_MASK64 = 0xFFFFFFFFFFFFFFFF

# Stream numbers of load_dataset's seeded steps. Generation uses the seed itself (sklearn's
# make_* take it as random_state); each split draws from its own stream, so changing
# validation_split never changes which samples are in the test split.
TEST_STREAM = 1
VALIDATION_STREAM = 2


def mix_seed(seed: int, stream: int) -> int:
    """Mix ``seed`` and a stream number (an epoch, say) into one 63-bit generator seed.

    ``z = seed * 0x9E3779B97F4A7C15 + stream + 1 (mod 2**64)``, then splitmix64's finalizer.
    Neighbouring seeds and streams give unrelated generators, and the value is a pure
    function of its arguments: there is no hidden state to save in a checkpoint.
    """
    z = (seed * 0x9E3779B97F4A7C15 + stream + 1) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) & 0x7FFFFFFFFFFFFFFF
