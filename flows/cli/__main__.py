"""`python -m flows.cli`: the same commands as `cai`."""

from flows.cli import main

main()
