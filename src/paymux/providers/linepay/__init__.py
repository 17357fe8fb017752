"""LINE Pay Online API v3: signing, adapter and sandbox."""
