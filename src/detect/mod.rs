//! Detection: feature scaling, Half-Space Trees, thresholds, windows.

pub mod features;
pub mod threshold;
pub mod window;
