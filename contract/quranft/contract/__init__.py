"""The contract between the operator, the stage containers (trainer, benchmark) and the tests.

One typed definition of what the components agree on (docs/contracts.md), imported by all of them and
importing none of them: `exits` (exit codes, which are fatal), `summaries` (the 4 KB termination message),
`progress` (the `QURANFT_PROGRESS` line), `config` (the run config every stage reads), `workspace` (paths on
the claim, as functions) and `keys` (the API group, kinds, labels and annotations). Pure: pydantic and the
standard library only, so every image and the embedded cluster's pods can import it cheaply.
"""
