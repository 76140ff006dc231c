//! ballast-consensus: runs shards over the engine.
