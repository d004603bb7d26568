"""The seed's reference applications (scenario A: warehouse_flow, B: payment_flow)."""
