"""``python -m lesionssl`` runs the command-line interface."""

from lesionssl.cli import main

main()
