//! The Prometheus text endpoint (placeholder; being written).
