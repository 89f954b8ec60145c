//! Names and images from the container runtime's CRI.
pub mod fact;

pub use fact::{CriFact, CriPod};
