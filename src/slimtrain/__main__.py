"""Allow ``python -m slimtrain``."""

from slimtrain.cli import main

raise SystemExit(main())
