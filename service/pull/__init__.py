"""The pull doors: the Events API poller and the Data API backfill (Clever has no push)."""
