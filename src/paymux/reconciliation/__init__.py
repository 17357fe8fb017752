"""Reconciliation: settlement files and bank statements matched against paymux's transactions."""
