pub mod attach;
pub mod sessions;
