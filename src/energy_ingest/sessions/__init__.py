"""Charging sessions: one per OCPP transaction, and the vehicle–meter link it makes."""
