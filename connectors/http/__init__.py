"""HTTP sink to an MES: batched JSON POSTs with idempotency keys."""
