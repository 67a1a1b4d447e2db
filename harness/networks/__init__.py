"""The networks: a deep, optionally bidirectional recurrent stack and one plain ``nn.Module`` per task family."""
