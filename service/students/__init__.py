"""The roster: pure rules (`rules.py`), their storage (`store.py`) and the query API."""
