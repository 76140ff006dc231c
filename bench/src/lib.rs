//! ballast-bench.
