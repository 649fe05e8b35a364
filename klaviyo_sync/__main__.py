"""`python -m klaviyo_sync` runs the command line."""

from __future__ import annotations

from klaviyo_sync.cli import main

if __name__ == "__main__":
    main()
