"""The MQTT way in: topics to readings (payloads.py), the broker connection and delivery (consumer.py)."""
