"""Small shared utilities (config helpers, logging)."""
