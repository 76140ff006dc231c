//! How results leave the program: text tables, JSON, HdrHistogram logs.

pub mod hdr_log;
pub mod server_table;
pub mod table;
