"""The OCPP 1.6J way in: chargers connect over WebSocket, and their transactions become sessions."""
