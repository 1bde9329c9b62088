"""``python -m mailconnect.service``: the same as ``mailconnect serve``."""

from mailconnect.cli.serve import main

main()
