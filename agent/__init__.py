"""lineside agent: the protocol-agnostic runtime (config, model, store, KPIs, forwarding)."""

__version__ = "0.1.0"
