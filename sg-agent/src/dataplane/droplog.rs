//! The drop log: reading the ring buffer of dropped packets (placeholder; being written).
