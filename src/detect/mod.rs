//! Detection: feature scaling, Half-Space Trees, thresholds, windows.

pub mod checkpoint;
pub mod hst;
pub mod mt19937;
pub mod scale;
