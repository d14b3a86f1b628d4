"""Fiscal data and signed meter values: what a receipt and an auditor need beyond the payment."""
