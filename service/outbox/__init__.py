"""The outbox: messages appended in the writers' transactions (any topic and key), and the relay."""
