"""HTTP sink to an MES: config model now, runtime with the forwarding issue."""
