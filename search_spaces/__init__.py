"""Shipped search spaces (YAML). A package so the files install with countnet and are found with
`importlib.resources.files("search_spaces")`. The schema is documented in `tune/space.py`."""
