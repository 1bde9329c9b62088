"""`python -m mailconnect` runs the command line."""

from mailconnect.cli import main

main()
