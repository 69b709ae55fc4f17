//! Declarative apply: a whole desired state from a document, and its diff (placeholder; being written).
