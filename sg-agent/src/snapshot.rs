//! Security group snapshots (placeholder; being written).
