"""Modbus TCP and RTU: tag addressing and config now; planner, codec and sources with the hot loop."""
