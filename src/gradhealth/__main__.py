"""``python -m gradhealth``: the command-line tool."""

from gradhealth.cli import main

raise SystemExit(main())
