"""The webhook door: Standard Webhooks verification, parsing, and durable publish to Kafka."""
