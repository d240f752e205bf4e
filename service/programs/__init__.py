"""Programs: the single-school rule and its alerts (pure), the check, assignments, the API."""
