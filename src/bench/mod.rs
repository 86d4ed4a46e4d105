//! Benchmark mode and the synthetic traffic generator.
