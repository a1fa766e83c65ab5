"""fsctl — a voice callback controller for FreeSWITCH."""

__version__ = "0.1.0"
