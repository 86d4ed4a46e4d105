//! The engine: the stages wired into a running pipeline for every source — the reader
//! loop, the scorer shards, the evidence writer, the flow output — and the runs built from
//! them (flows, replay, live capture, evaluation). Below the command layer: no clap, no
//! printing of results.

pub mod bench;
pub mod builder;
pub mod eval;
pub mod limits;
pub mod live;
pub mod models;
pub mod pipeline;
pub mod reader;
pub mod replay;
pub mod scorer;
