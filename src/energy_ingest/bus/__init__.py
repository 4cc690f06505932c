"""Bus mode: a replicated NATS JetStream log between the ways in and the writer processes."""
