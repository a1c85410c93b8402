"""Which Slurm option a command-line word really spells, the way sbatch/srun parse it.

sbatch and srun read options with getopt_long: a long option may be abbreviated to any unambiguous
prefix (``--job=x`` is ``--job-name=x``, ``--out=f`` is ``--output=f``), a short option's value
may be attached (``-Jname``, ``-ofile``) and short options without a value may be bundled
(``-vJname``). A reserved option must be recognised in every one of these spellings, or a user
can rename the job or move its output away from the run directory we stream logs from.
"""

from __future__ import annotations

from collections.abc import Iterable

# sbatch's short options that take a value (slurm 22.05-24.x `sbatch --help`): everything after
# such a letter in the same word is its value, so later letters are not options.
SBATCH_SHORT_WITH_VALUE = frozenset("aAbBcCdDeFGiJLmMnNopqStwx")


def reserved_spelled(
    word: str,
    reserved: Iterable[str],
    short_with_value: frozenset[str] = SBATCH_SHORT_WITH_VALUE,
) -> str | None:
    """The reserved option (``--output``, ``-J``, ...) that ``word`` spells, or None.

    ``word`` is one option word, with or without ``=value``. A long option matches a reserved
    one it abbreviates (getopt_long accepts any unambiguous prefix; an ambiguous one is refused
    by sbatch anyway). A short word is read letter by letter until a letter that takes a value.
    """
    names = set(reserved)
    if word.startswith("--"):
        opt = word.split("=", 1)[0]
        if len(opt) <= 2:
            return None
        hits = sorted(n for n in names if n.startswith("--") and n.startswith(opt))
        return hits[0] if hits else None
    if word.startswith("-") and len(word) > 1:
        for letter in word[1:]:
            if f"-{letter}" in names:
                return f"-{letter}"
            if letter in short_with_value or not letter.isalpha():
                return None
    return None
