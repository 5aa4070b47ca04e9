"""What every stamen service shares: connections as cleanup contexts, health endpoints, a runner."""
