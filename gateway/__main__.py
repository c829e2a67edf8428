"""`python -m gateway` is the `mdgateway` command."""

from gateway.cli import main

raise SystemExit(main())
