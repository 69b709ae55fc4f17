pub mod attach;
