"""`python -m spoold` is the `spoold` command."""

from spoold.cli import main

raise SystemExit(main())
