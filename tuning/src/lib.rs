//! ballast-tuning.
