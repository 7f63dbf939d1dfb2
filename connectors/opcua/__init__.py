"""OPC UA source (asyncua): config model now, runtime with the OPC UA issue."""
