//! Bidirectional flow table with nfstream-compatible features.
