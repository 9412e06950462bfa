"""Release: bundling packages into the demo apps and all-or-nothing zoo releases."""
