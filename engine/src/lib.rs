#![deny(unsafe_code)]
pub mod dissect;
pub mod flow;
pub mod wire;
