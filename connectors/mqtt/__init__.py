"""MQTT sink with a Unified Namespace topic tree (ISA-95 levels), PUBACK-driven."""
