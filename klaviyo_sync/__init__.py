"""klaviyo-sync: tails a business system's log and database and delivers to Klaviyo."""

from __future__ import annotations

__version__ = "0.1.0"
