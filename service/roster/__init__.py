"""The roster: pure rules (`rules.py`), records and their change messages (`records.py`,
`changes.py`), their storage (`store.py`) and the section API."""
