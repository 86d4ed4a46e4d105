//! Detection: feature scaling, Half-Space Trees, thresholds, windows.

pub mod checkpoint;
pub mod detector;
pub mod features;
pub mod host;
pub mod hst;
pub mod mt19937;
pub mod scale;
pub mod threshold;
pub mod window;
