//! Watching interfaces come and go over netlink (placeholder; being written).
