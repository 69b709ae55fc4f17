//! The agent's durable store (placeholder; being written).
