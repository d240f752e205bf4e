"""The event status API: what became of an event id."""
