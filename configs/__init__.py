"""Configuration: one yacs schema (``default.py``), YAML loading with ``_BASE_`` and clear errors."""
from configs.default import get_cfg_defaults
from configs.loader import ConfigError, load_config, merge_opts

__all__ = ["ConfigError", "get_cfg_defaults", "load_config", "merge_opts"]
