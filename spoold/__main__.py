"""`python -m spoold` is the `spoold` command."""

from spoold.commands.cli import main

raise SystemExit(main())
