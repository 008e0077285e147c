"""`python -m hdml.cli`, as the installed `hdml` command."""
from hdml.cli import main

raise SystemExit(main())
